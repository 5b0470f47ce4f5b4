"""Reasoning distillation: SFT on R1-format answers with extra weight on the think/answer tags.

The tags (``<think> </think> <answer> </answer>``) are single tokens in our tokenizer; a tag token is
up-weighted only where it is a supervised (assistant) target, never in the prompt. With a tokenizer that
lacks some tags (MiniMind2) those are simply not up-weighted, and the run says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from weakwater.data.sft import tag_token_ids
from weakwater.train.config import ConfigError
from weakwater.train.stage import StageContext
from weakwater.train.stages.sft import SFTConfig, SFTStage


@dataclass
class DistillConfig(SFTConfig):
    data: str = field(
        default="",
        metadata={"help": "R1-format chat JSONL: assistant turns <think>...</think><answer>...</answer>"},
    )
    out: str = field(default="runs/distill", metadata={"help": "run directory (checkpoints, metrics, final model)"})
    tag_weight: float = field(
        default=10.0, metadata={"help": "loss weight of think/answer tag tokens at assistant positions (1: plain SFT)"}
    )

    def validate(self) -> None:
        super().validate()
        if self.tag_weight <= 0:
            raise ConfigError(f"invalid config: --tag-weight must be > 0, got {self.tag_weight}")


class DistillStage(SFTStage):
    name = "distill"

    def __init__(self, cfg: DistillConfig, tokenizer: Any) -> None:
        self.tags = tag_token_ids(tokenizer)
        super().__init__(cfg, tokenizer, self.tags, cfg.tag_weight)

    def setup(self, ctx: StageContext) -> None:
        super().setup(ctx)
        if len(self.tags) < 4:
            ctx.say(
                f"distill: the tokenizer has {len(self.tags)} of the 4 think/answer tag tokens; "
                "only those get --tag-weight"
            )
