"""Distillation, two kinds on one stage:

- *trace distillation* (always): SFT on R1-format answers (a teacher's reasoning traces, as text) with extra
  weight on the think/answer tags. The tags (``<think> </think> <answer> </answer>``) are single tokens in
  our tokenizer; a tag token is up-weighted only where it is a supervised (assistant) target, never in the
  prompt. With a tokenizer that lacks some tags (MiniMind2) those are simply not up-weighted, and the run
  says so.
- *logit distillation* (``--teacher DIR``, white-box): the teacher model runs on the same batch (no grad,
  eval mode, optionally bf16) and each supervised token's loss becomes
  ``alpha * tau^2 * KL(teacher || student at temperature tau) + (1 - alpha) * CE``
  (:func:`weakwater.train.losses.distillation_loss`), with the same tag weights. Teacher and student must
  share the tokenizer (checked: same vocabulary file), since the KL compares distributions over token ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from weakwater.data.packing import model_inputs
from weakwater.data.sft import tag_token_ids
from weakwater.model.io import file_sha256, load_model
from weakwater.model.loglik import IGNORE_INDEX
from weakwater.train.config import ConfigError
from weakwater.train.losses import distillation_loss
from weakwater.train.stage import StageContext
from weakwater.train.stages.sft import SFTConfig, SFTStage


@dataclass
class DistillConfig(SFTConfig):
    data: str = field(
        default="",
        metadata={
            "help": "R1-format chat JSONL (assistant turns <think>...</think><answer>...</answer>) or its "
            "`weakwater prepare --chat sft` directory"
        },
    )
    out: str = field(default="runs/distill", metadata={"help": "run directory (checkpoints, metrics, final model)"})
    tag_weight: float = field(
        default=10.0, metadata={"help": "loss weight of think/answer tag tokens at assistant positions (1: plain SFT)"}
    )
    teacher: str | None = field(
        default=None,
        metadata={"help": "saved teacher model for logit (white-box) distillation; unset: trace distillation only"},
    )
    kd_alpha: float = field(
        default=0.5, metadata={"help": "weight of the teacher KL term (1 - alpha on the cross-entropy)"}
    )
    kd_temperature: float = field(default=1.0, metadata={"help": "softmax temperature tau of the teacher KL term"})
    teacher_dtype: str = field(default="fp32", metadata={"help": "fp32 or bf16 weights for the teacher"})

    def validate(self) -> None:
        super().validate()
        problems = []
        if self.tag_weight <= 0:
            problems.append(f"--tag-weight must be > 0, got {self.tag_weight}")
        if not 0 <= self.kd_alpha <= 1:
            problems.append(f"--kd-alpha must be in [0, 1], got {self.kd_alpha}")
        if self.kd_temperature <= 0:
            problems.append(f"--kd-temperature must be > 0, got {self.kd_temperature}")
        if self.teacher_dtype not in ("fp32", "bf16"):
            problems.append(f"--teacher-dtype must be fp32 or bf16, got {self.teacher_dtype!r}")
        if self.teacher is not None and not (Path(self.teacher) / "config.json").is_file():
            problems.append(f"--teacher {self.teacher}: not a saved model directory (no config.json)")
        if problems:
            raise ConfigError("invalid config: " + "; ".join(problems))


def check_same_tokenizer(teacher_dir: str | Path, tokenizer: Any) -> None:
    """Logit distillation compares distributions over token ids: both models must use one vocabulary."""
    theirs = Path(teacher_dir) / "tokenizer.json"
    ours = Path(getattr(tokenizer, "dir", "")) / "tokenizer.json"
    if not theirs.is_file():
        raise ConfigError(f"--teacher {teacher_dir}: no tokenizer.json, cannot check it matches the student's")
    if not ours.is_file() or file_sha256(theirs) != file_sha256(ours):
        raise ConfigError(
            f"--teacher {teacher_dir} uses a different tokenizer than the student ({ours.parent}): logit "
            f"distillation needs the same vocabulary; use trace distillation (R1 text data, no --teacher) instead"
        )


class DistillStage(SFTStage):
    name = "distill"

    def __init__(self, cfg: DistillConfig, tokenizer: Any) -> None:
        self.tags = tag_token_ids(tokenizer)
        super().__init__(cfg, tokenizer, self.tags, cfg.tag_weight)
        self.cfg: DistillConfig = cfg
        self.teacher: torch.nn.Module | None = None
        if cfg.teacher is not None:
            check_same_tokenizer(cfg.teacher, tokenizer)

    def setup(self, ctx: StageContext) -> None:
        super().setup(ctx)
        if len(self.tags) < 4:
            ctx.say(
                f"distill: the tokenizer has {len(self.tags)} of the 4 think/answer tag tokens; "
                "only those get --tag-weight"
            )
        if self.cfg.teacher is None:
            return
        teacher = load_model(self.cfg.teacher, device=ctx.device)
        if teacher.config.vocab_size != ctx.model.config.vocab_size:
            raise ConfigError(
                f"--teacher {self.cfg.teacher} has vocab_size {teacher.config.vocab_size}, the student "
                f"{ctx.model.config.vocab_size}: logit distillation needs the same vocabulary"
            )
        if self.cfg.teacher_dtype == "bf16":
            teacher = teacher.to(torch.bfloat16)
        self.teacher = teacher.eval().requires_grad_(False)
        ctx.say(f"distill: teacher {self.cfg.teacher} (alpha {self.cfg.kd_alpha}, tau {self.cfg.kd_temperature})")

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], *, train: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        if self.teacher is None:
            return super().loss(model, batch, train=train)
        logits = model(batch["input_ids"], **model_inputs(batch))
        with torch.no_grad():
            teacher_logits = self.teacher(batch["input_ids"], **model_inputs(batch))
        total, weight = distillation_loss(
            logits, teacher_logits, batch["labels"], batch["weights"], self.cfg.kd_temperature, self.cfg.kd_alpha
        )
        return total, weight, {"loss_tokens": (batch["labels"] != IGNORE_INDEX).sum().float()}
