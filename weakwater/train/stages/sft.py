"""Supervised fine-tuning on chat JSONL, optionally at a longer context than pretraining (RoPE scaling).

Loss: token cross-entropy on assistant tokens only (mask rule in :mod:`weakwater.data.sft`), summed;
the normaliser is the summed token weight (= supervised token count for plain SFT).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch.utils.data import Dataset

from weakwater.data.sft import ChatDataset, SFTCollator
from weakwater.model.config import RopeScaling
from weakwater.model.io import read_model_config
from weakwater.model.llama import rope_frequencies
from weakwater.train.config import ConfigError, TrainConfig
from weakwater.train.losses import weighted_token_ce

if TYPE_CHECKING:
    from weakwater.train.trainer import Trainer

ROPE_SCALINGS = ("none", "linear", "yarn")


@dataclass
class SFTConfig(TrainConfig):
    data_is_jsonl: ClassVar[bool] = True

    data: str = field(
        default="",
        metadata={"help": "chat JSONL (MiniMind conversations, ShareGPT, Alpaca) or a question/answer CSV"},
    )
    out: str = field(default="runs/sft", metadata={"help": "run directory (checkpoints, metrics, final model)"})
    lr: float = field(default=2e-4, metadata={"help": "peak learning rate"})
    warmup_steps: int = field(default=20, metadata={"help": "linear warmup steps"})
    val_data: str | None = field(default=None, metadata={"help": "validation conversations (JSONL or CSV)"})
    data_format: str = field(
        default="auto",
        metadata={"help": "auto, messages (MiniMind), sharegpt or alpaca; .csv files are question/answer"},
    )
    strict: bool = field(default=False, metadata={"help": "stop at the first malformed record instead of skipping it"})
    max_seq_len: int = field(
        default=0,
        metadata={
            "help": "new context length (also the sample length); above the --init model's it needs --rope-scaling"
        },
    )
    rope_scaling: str = field(
        default="none", metadata={"help": "none, linear or yarn: how to stretch RoPE to --max-seq-len"}
    )

    def __post_init__(self) -> None:
        if self.max_seq_len > 0:
            self.seq_len = self.max_seq_len

    def validate(self) -> None:
        super().validate()
        problems = []
        if self.rope_scaling not in ROPE_SCALINGS:
            problems.append(f"--rope-scaling must be one of {', '.join(ROPE_SCALINGS)}, got {self.rope_scaling!r}")
        if self.rope_scaling != "none" and not (self.init and self.max_seq_len):
            problems.append("--rope-scaling needs --init (the pretrained model) and --max-seq-len (the new length)")
        if self.data_format not in ("auto", "messages", "sharegpt", "alpaca"):
            problems.append(f"--data-format must be auto, messages, sharegpt or alpaca, got {self.data_format!r}")
        if problems:
            raise ConfigError("invalid config: " + "; ".join(problems))
        self.model = {**self.model, **context_overrides(self)}


def context_overrides(cfg: SFTConfig) -> dict[str, Any]:
    """ModelConfig overrides for ``--max-seq-len``/``--rope-scaling`` relative to the ``--init`` model.

    Stored in the run's model config (hence in every checkpoint), so inference and export use the
    same stretched positions.
    """
    if not cfg.max_seq_len or not cfg.init:
        return {}
    base, _ = read_model_config(cfg.init)
    original = base.rope_scaling.original_max_seq_len if base.rope_scaling else base.max_seq_len
    if cfg.max_seq_len <= base.max_seq_len:
        return {"max_seq_len": base.max_seq_len}
    if cfg.rope_scaling == "none":
        raise ConfigError(
            f"--max-seq-len {cfg.max_seq_len} exceeds the --init model's context ({base.max_seq_len}); "
            "add --rope-scaling linear or --rope-scaling yarn"
        )
    scaling = RopeScaling(kind=cfg.rope_scaling, factor=cfg.max_seq_len / original, original_max_seq_len=original)
    return {"max_seq_len": cfg.max_seq_len, "rope_scaling": scaling.__dict__.copy()}


def apply_context(model: torch.nn.Module, overrides: dict[str, Any]) -> None:
    """Make a loaded model use the new context: update its config and recompute the RoPE tables."""
    if not overrides:
        return
    config = model.config
    config.max_seq_len = overrides["max_seq_len"]
    scaling = overrides.get("rope_scaling")
    config.rope_scaling = RopeScaling(**scaling) if isinstance(scaling, dict) else scaling
    inv_freq, model.attention_scale = rope_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
    model.inv_freq.copy_(inv_freq.to(model.inv_freq.device))


def say(message: str) -> None:
    """One summary line on stderr (rank 0 prints; the trainer's progress bar also writes there)."""
    if os.environ.get("RANK", "0") == "0":
        print(message, file=sys.stderr, flush=True)


def report_trainable(trainer: Trainer) -> None:
    """With LoRA on, say how many parameters actually train."""
    from weakwater.model.lora import lora_modules, trainable_summary

    if any(True for _ in lora_modules(trainer.model)):
        say(f"LoRA: {trainable_summary(trainer.model)}")


class SFTStage:
    """Assistant-only cross-entropy over chat samples of at most ``seq_len + 1`` tokens."""

    name = "sft"

    def __init__(self, cfg: SFTConfig, tokenizer: Any, tag_ids: tuple[int, ...] = (), tag_weight: float = 1.0) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.collator = SFTCollator(tokenizer.eos_id, tag_ids, tag_weight)
        self.train_set: ChatDataset | None = None
        self.val_set: ChatDataset | None = None

    def datasets(self) -> tuple[Dataset, Dataset | None]:
        cfg = self.cfg
        self.train_set = ChatDataset(cfg.data, self.tokenizer, cfg.seq_len + 1, cfg.strict, cfg.data_format)
        if cfg.val_data:
            self.val_set = ChatDataset(cfg.val_data, self.tokenizer, cfg.seq_len + 1, cfg.strict, cfg.data_format)
        for split, ds in (("train", self.train_set), ("val", self.val_set)):
            if ds is not None:
                say(f"{self.name} {split} data: {len(ds)} conversations, {ds.skipped.summary()}")
        return self.train_set, self.val_set

    def collate(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return self.collator(samples)

    def setup(self, trainer: Trainer) -> None:
        apply_context(trainer.model, context_overrides(self.cfg))
        report_trainable(trainer)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict]:
        logits = model(batch["input_ids"])
        total, weight = weighted_token_ce(logits, batch["targets"], batch["weights"])
        return total, weight, {"loss_tokens": float((batch["targets"] != -100).sum())}

    def evaluate(self, trainer: Trainer) -> dict[str, float]:
        """Data-quality counters, logged with each evaluation so truncation and skips are never silent."""
        out: dict[str, float] = {}
        for split, ds in (("train", self.train_set), ("val", self.val_set)):
            if ds is not None:
                stats = ds.stats
                out[f"{split}_skipped"] = float(ds.skipped.total)
                out[f"{split}_truncated"] = float(stats["truncated_head"] + stats["truncated_tail"])
                if trainer.step >= trainer.total_steps:
                    say(
                        f"{self.name} {split} data: {ds.skipped.summary()}; truncated to {self.cfg.seq_len + 1} "
                        f"tokens: {stats['truncated_head']} kept their head, {stats['truncated_tail']} their tail"
                    )
        return out
