"""The contract between the one training engine and a training stage.

A stage is only data + a collator + a loss: pretraining, SFT, distillation and DPO all run through
:class:`weakwater.train.trainer.Trainer`, which owns everything else (optimizer, schedule,
precision, checkpoints, distributed, fault handling).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch.utils.data import Dataset

if TYPE_CHECKING:
    from weakwater.train.trainer import Trainer


@runtime_checkable
class Stage(Protocol):
    name: str

    def datasets(self) -> tuple[Dataset, Dataset | None]:
        """Map-style (train, validation) datasets; validation may be None."""
        ...

    def collate(self, samples: list[Any]) -> dict[str, torch.Tensor]:
        """Stack dataset items into one CPU batch; the trainer moves it to the device."""
        ...

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(summed loss, normaliser count, extra metrics) for one micro-batch.

        The loss is a SUM over tokens (or pairs) and the count says how many were summed. The trainer
        divides the gradients by the count summed over all micro-batches and ranks of the step, so
        gradient accumulation and data parallelism give exactly the gradient of one big batch.
        ``model`` may be a DDP/compiled wrapper: call it, do not read attributes from it
        (use ``trainer.model`` for that).
        """
        ...


def call_setup(stage: Stage, trainer: Trainer) -> None:
    """Run the optional ``setup(trainer)`` hook (e.g. DPO precomputing reference log-probs)."""
    hook = getattr(stage, "setup", None)
    if hook is not None:
        hook(trainer)


def call_evaluate(stage: Stage, trainer: Trainer) -> dict[str, float]:
    """Run the optional ``evaluate(trainer)`` hook for extra held-out metrics."""
    hook = getattr(stage, "evaluate", None)
    return dict(hook(trainer)) if hook is not None else {}
