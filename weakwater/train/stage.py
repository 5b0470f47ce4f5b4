"""The contract between the one training engine and a training stage.

A stage is its data, its batch construction and its loss. Pretraining, SFT, distillation, DPO (and any
stage written outside the package) run through :class:`weakwater.train.trainer.Trainer`, which owns
everything else: optimizer, schedule, precision, checkpoints, distribution, fault handling.

Required: ``name``, ``datasets()``, ``collate(samples)``, ``loss(model, batch, *, train)``.
Optional hooks, called by the trainer when the stage defines them:

- ``setup(ctx)``: once, after the model is built (and a checkpoint loaded on ``--resume``), before the
  first step. E.g. load a reference model, stretch RoPE, precompute reference log-probs.
- ``rollout(ctx, batch) -> batch``: for every batch the loss sees (training micro-batches and
  validation batches), after the batch is on the device and before ``loss``. It runs under
  ``torch.no_grad()``, with ``ctx.model`` (the live weights) in eval mode and inside ``ctx.autocast()``;
  the model is back in train mode for the loss. Online stages generate here with the current policy
  (sampling from ``ctx.generator``) and score what they generated.
- ``evaluate(ctx) -> dict[str, float]``: extra held-out metrics, logged with each evaluation.
- ``state_dict() -> dict`` / ``load_state_dict(state)``: stage state written into every checkpoint
  (one per rank; tensors and plain Python values), so a resumed run continues exactly. Stateless
  stages leave them out.

The stage never sees the Trainer, only a :class:`StageContext`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import Dataset

from weakwater import console
from weakwater.device import autocast

# A metric: a 0-d device tensor (averaged over micro-batches and ranks), or a (sum, count) pair of them
# (summed over micro-batches and ranks, then divided: a global per-token mean, whatever the split).
Metrics = dict[str, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]


@runtime_checkable
class Stage(Protocol):
    name: str

    def datasets(self) -> tuple[Dataset, Dataset | None]:
        """Map-style (train, validation) datasets; validation may be None."""
        ...

    def collate(self, samples: list[Any]) -> dict[str, torch.Tensor]:
        """Stack dataset items into one CPU batch; the trainer moves it to the device."""
        ...

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], *, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        """(summed loss, normaliser count, metrics) for one micro-batch; ``train`` is False on validation.

        The loss is a SUM over tokens (or pairs) and the count says how many were summed. The trainer
        divides the gradients by the count summed over all micro-batches and ranks of the step, so
        gradient accumulation and data parallelism give exactly the gradient of one big batch.
        Metrics are 0-d tensors left on the device: the trainer averages them over micro-batches and
        ranks and reads them on the host only when it writes a log line (a ``float()`` here would stall
        the GPU every micro-batch). A ``(sum, count)`` pair is a ratio of sums instead (per-token means:
        the global mean over every rank's tokens, not a mean of per-rank means). Validation metrics are
        logged as ``val_<name>``.
        ``model`` may be a DDP/compiled wrapper: call it, do not read attributes from it (``ctx.model``
        is the plain module).
        """
        ...


@dataclass
class StageContext:
    """What a stage's hooks may see of the run: a narrow, read-mostly view, not the Trainer.

    ``model`` is the plain (unwrapped) module holding the live weights; ``generator`` is this rank's
    sampling RNG (seeded from ``cfg.seed`` and the rank, saved and restored by every checkpoint);
    ``step`` is the number of optimizer steps done, updated by the trainer.
    """

    cfg: Any
    model: torch.nn.Module
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    rank: int
    world_size: int
    generator: torch.Generator
    run_dir: Path
    total_steps: int
    step: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """The training precision: bf16/fp16 autocast on the run's device, nothing in fp32."""
        return autocast(self.device, self.dtype)

    def say(self, message: str) -> None:
        """One summary line on stderr from rank 0, above the progress bar (:func:`weakwater.console.say`)."""
        if self.is_main:
            console.say(message)


def sampling_generator(seed: int, rank: int, device: torch.device) -> torch.Generator:
    """``StageContext.generator``: a stream of its own per rank, apart from the dropout stream."""
    mixed = int(np.random.SeedSequence([seed, rank, 0x5EED]).generate_state(1, np.uint64)[0])
    return torch.Generator(device=device).manual_seed(mixed)


def call_setup(stage: Stage, ctx: StageContext) -> None:
    hook = getattr(stage, "setup", None)
    if hook is not None:
        hook(ctx)


def has_rollout(stage: Stage) -> bool:
    return callable(getattr(stage, "rollout", None))


def call_rollout(stage: Stage, ctx: StageContext, batch: dict[str, Any]) -> dict[str, Any]:
    """``stage.rollout`` in the declared mode: no grad, eval mode, autocast; train mode restored after."""
    was_training = ctx.model.training
    ctx.model.eval()
    try:
        with torch.no_grad(), ctx.autocast():
            return stage.rollout(ctx, batch)  # type: ignore[attr-defined]
    finally:
        ctx.model.train(was_training)


def call_evaluate(stage: Stage, ctx: StageContext) -> dict[str, float]:
    hook = getattr(stage, "evaluate", None)
    return dict(hook(ctx)) if hook is not None else {}


def stage_state(stage: Stage) -> dict[str, Any] | None:
    hook = getattr(stage, "state_dict", None)
    return hook() if hook is not None else None


def load_stage_state(stage: Stage, state: dict[str, Any] | None) -> None:
    hook = getattr(stage, "load_state_dict", None)
    if hook is not None and state is not None:
        hook(state)
