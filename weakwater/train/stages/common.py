"""What the chat stages (SFT, distillation, DPO) share: their config base, the context-length resolution
against the ``--init`` model, console lines and the LoRA report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from weakwater import console
from weakwater.model.config import RopeScaling
from weakwater.model.io import read_model_config
from weakwater.model.llama import rope_frequencies
from weakwater.train import distributed as wwdist
from weakwater.train.config import ConfigError, FineTuneRecipe, TrainConfig

ROPE_SCALINGS = ("none", "linear", "yarn")


def say(message: str) -> None:
    """One summary line on stderr, from the main process only, above the progress bar."""
    if wwdist.is_main():
        console.say(message)


@dataclass
class ChatConfig(FineTuneRecipe, TrainConfig):
    """Fields of every stage that trains on chat JSONL read directly (no ``weakwater prepare`` step)."""

    data_is_jsonl: ClassVar[bool] = True

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
    pack: bool = field(
        default=True,
        metadata={
            "help": "pack each micro-batch's samples into rows of the sample length, attention kept within each "
            "sample (the same samples and loss as padding, fewer wasted slots); off: one right-padded sample per row"
        },
    )
    allow_truncation: bool = field(
        default=False,
        metadata={"help": "train even when most samples would lose the end of their answer to the window"},
    )

    @property
    def window_flag(self) -> str:
        """The setting that decides the sample window, as the user typed it."""
        return f"--max-seq-len {self.max_seq_len}" if self.max_seq_len else f"--seq-len {self.seq_len}"

    @property
    def sample_len(self) -> int:
        """Tokens per training sample (inputs): ``--max-seq-len`` when set, else ``--seq-len``."""
        return self.max_seq_len or self.seq_len

    def validate(self) -> None:
        super().validate()
        problems = []
        if self.rope_scaling not in ROPE_SCALINGS:
            problems.append(f"--rope-scaling must be one of {', '.join(ROPE_SCALINGS)}, got {self.rope_scaling!r}")
        if self.rope_scaling != "none" and not (self.init and self.max_seq_len):
            problems.append("--rope-scaling needs --init (the pretrained model) and --max-seq-len (the new length)")
        if self.max_seq_len < 0:
            problems.append(f"--max-seq-len must be >= 0, got {self.max_seq_len}")
        if problems:
            raise ConfigError("invalid config: " + "; ".join(problems))

    def model_overrides(self) -> dict[str, Any]:
        return {**self.model, **context_overrides(self)}


def context_overrides(cfg: ChatConfig) -> dict[str, Any]:
    """ModelConfig overrides for ``--max-seq-len``/``--rope-scaling`` relative to the ``--init`` model
    (reads its config.json).

    They become part of the run's model config (hence of every checkpoint and the final model), so
    inference and export use the same stretched positions.
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


def check_lengths(cfg: ChatConfig, datasets: dict[str, Any], name: str) -> None:
    """Before the first step: each split's length distribution and what the window cuts; refuse when most
    samples would lose their answer's end (see :mod:`weakwater.data.truncation`)."""
    from weakwater.data.truncation import check_lengths as check

    for split, ds in datasets.items():
        if ds is not None:
            report = ds.length_report(seed=cfg.seed)
            report.setting = cfg.window_flag
            check(report, cfg.allow_truncation, say, f"{name} {split} data")


def report_trainable(model: torch.nn.Module) -> None:
    """With LoRA on, say how many parameters actually train."""
    from weakwater.model.lora import lora_modules, trainable_summary

    if any(True for _ in lora_modules(model)):
        say(f"LoRA: {trainable_summary(model)}")
