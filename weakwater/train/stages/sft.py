"""Supervised fine-tuning on chat JSONL, optionally at a longer context than pretraining (RoPE scaling).

Loss: token negative log-likelihood on assistant tokens only (mask rule in :mod:`weakwater.data.sft`),
summed; the normaliser is the summed token weight (= supervised token count for plain SFT).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from weakwater.data.packing import model_inputs
from weakwater.data.sft import ChatDataset, SFTCollator
from weakwater.model.loglik import IGNORE_INDEX
from weakwater.train.config import ConfigError
from weakwater.train.losses import weighted_token_nll
from weakwater.train.stage import Metrics, StageContext
from weakwater.train.stages.common import ChatConfig, check_lengths, report_trainable, say

CHAT_FORMATS = ("auto", "messages", "sharegpt", "alpaca")


@dataclass
class SFTConfig(ChatConfig):
    data: str = field(
        default="",
        metadata={
            "help": "chat JSONL (MiniMind conversations, ShareGPT, Alpaca), a question/answer CSV, or a directory "
            "made by `weakwater prepare --chat sft` (pre-tokenised)"
        },
    )
    out: str = field(default="runs/sft", metadata={"help": "run directory (checkpoints, metrics, final model)"})
    lr: float = field(default=2e-4, metadata={"help": "peak learning rate"})
    warmup_steps: int = field(default=20, metadata={"help": "linear warmup steps"})
    val_data: str | None = field(
        default=None, metadata={"help": "validation conversations (JSONL, CSV or prepare --chat sft dir)"}
    )
    data_format: str = field(
        default="auto",
        metadata={"help": "auto, messages (MiniMind), sharegpt or alpaca; .csv files are question/answer"},
    )

    def validate(self) -> None:
        super().validate()
        if self.data_format not in CHAT_FORMATS:
            raise ConfigError(
                f"invalid config: --data-format must be one of {', '.join(CHAT_FORMATS)}, got {self.data_format!r}"
            )


class SFTStage:
    """Assistant-only cross-entropy over chat samples of at most ``sample_len + 1`` tokens."""

    name = "sft"

    def __init__(self, cfg: SFTConfig, tokenizer: Any, tag_ids: tuple[int, ...] = (), tag_weight: float = 1.0) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.collator = SFTCollator(tokenizer.eos_id, tag_ids, tag_weight, cfg.sample_len if cfg.pack else 0)
        self.train_set: ChatDataset | None = None
        self.val_set: ChatDataset | None = None

    def datasets(self) -> tuple[Dataset, Dataset | None]:
        cfg = self.cfg
        length = cfg.sample_len + 1
        self.train_set = ChatDataset(cfg.data, self.tokenizer, length, cfg.strict, cfg.data_format)
        if cfg.val_data:
            self.val_set = ChatDataset(cfg.val_data, self.tokenizer, length, cfg.strict, cfg.data_format)
        for split, ds in (("train", self.train_set), ("val", self.val_set)):
            if ds is not None:
                say(f"{self.name} {split} data: {len(ds)} conversations, {ds.skipped.summary()}")
        check_lengths(cfg, {"train": self.train_set, "val": self.val_set}, self.name)
        return self.train_set, self.val_set

    def collate(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return self.collator(samples)

    def setup(self, ctx: StageContext) -> None:
        report_trainable(ctx.model)

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], *, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        logits = model(batch["input_ids"], **model_inputs(batch))
        total, weight = weighted_token_nll(logits, batch["labels"], batch["weights"])
        return total, weight, {"loss_tokens": (batch["labels"] != IGNORE_INDEX).sum().float()}

    def evaluate(self, ctx: StageContext) -> dict[str, float]:
        """Data-quality counters, logged with each evaluation so truncation and skips are never silent."""
        out: dict[str, float] = {}
        for split, ds in (("train", self.train_set), ("val", self.val_set)):
            if ds is not None:
                stats = ds.stats
                out[f"{split}_skipped"] = float(ds.skipped.total)
                out[f"{split}_truncated"] = float(stats["truncated_head"] + stats["truncated_tail"])
                if ctx.step >= ctx.total_steps:
                    ctx.say(
                        f"{self.name} {split} data: {ds.skipped.summary()}; cut to {self.cfg.window_flag}: "
                        f"{stats['truncated_head']} kept their head, {stats['truncated_tail']} their tail"
                    )
        return out
