"""The optimizer and the learning-rate schedule of a training run (``--optimizer``, ``--schedule``).

- ``adamw``: AdamW on everything; weight decay on the attention/MLP matrices only (decay would keep
  pulling rarely seen embedding rows and the norm gains towards zero between their few updates).
- ``muon``: ``torch.optim.Muon`` (momentum orthogonalised by Newton-Schulz) on the attention/MLP
  matrices, AdamW on the embedding, the LM head and the norm gains, the split nanochat and
  modded-nanogpt use: Muon is only defined for hidden 2-D weights. Muon's step is scaled to AdamW's
  update RMS (Moonshot's ``match_rms_adamw``), so both take the same ``--lr`` and schedule.

Schedules (a factor on ``--lr``, before the rollback scale):

- ``cosine``: linear warmup, cosine decay to ``--min-lr-ratio`` at the last step;
- ``wsd``: warmup-stable-decay: linear warmup, constant, then linear decay to ``--min-lr-ratio`` over
  the last ``--decay-frac`` of the steps.
"""

from __future__ import annotations

import math
from typing import Any

import torch

OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "wsd")


def split_parameters(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(hidden matrices of attention and MLP, everything else) among the trainable parameters.

    The tied embedding / LM head is a lookup table and a classifier, not a hidden transform, so it
    stays with the norm gains (Muon and weight decay both leave it out).
    """
    matrices, others = [], []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        hidden = p.ndim == 2 and "embed_tokens" not in name and "lm_head" not in name
        (matrices if hidden else others).append(p)
    return matrices, others


class MuonWithAdamW:
    """Muon and AdamW stepped as one optimizer (the interface the trainer and GradScaler use).

    ``param_groups`` lists both optimizers' groups (the same dicts, so setting ``lr`` on them reaches
    both; read afresh each time, since ``load_state_dict`` replaces the dicts); the state dict holds both.
    """

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer) -> None:
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [*self.muon.param_groups, *self.adamw.param_groups]

    def step(self) -> None:
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


def optimizers(optimizer: Any) -> list[torch.optim.Optimizer]:
    """The torch optimizers behind ``optimizer`` (what ``torch.distributed.checkpoint`` saves and loads)."""
    if isinstance(optimizer, MuonWithAdamW):
        return [optimizer.muon, optimizer.adamw]
    return [optimizer]


def build_optimizer(
    model: torch.nn.Module, kind: str, lr: float, betas: tuple[float, float], weight_decay: float, fused: bool
) -> torch.optim.Optimizer | MuonWithAdamW:
    matrices, others = split_parameters(model)
    fused_arg = fused or None
    if kind == "adamw":
        groups = [{"params": matrices, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused_arg)
    if kind == "muon":
        muon = torch.optim.Muon(matrices, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
        adamw = torch.optim.AdamW(others, lr=lr, betas=betas, weight_decay=0.0, fused=fused_arg)
        return MuonWithAdamW(muon, adamw)
    raise ValueError(f"unknown optimizer {kind!r}; choose one of {', '.join(OPTIMIZERS)}")


def lr_factor(
    step: int, total: int, warmup: int, schedule: str = "cosine", min_ratio: float = 0.1, decay_frac: float = 0.2
) -> float:
    """Multiplier on the peak learning rate for 0-based ``step`` of ``total`` (see the module docstring)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "wsd":
        decay_steps = max(1, round(decay_frac * (total - warmup)))
        left = total - step  # steps still to run, this one included
        return 1.0 if left > decay_steps else min_ratio + (1 - min_ratio) * (left - 1) / decay_steps
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
