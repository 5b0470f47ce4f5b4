"""Losses of the post-training stages, written as sums so the trainer can normalise across micro-batches.

DPO family (Rafailov et al. 2023; IPO: Azar et al. 2023; SimPO: Meng et al. 2024), with
``pc, pr`` the policy's summed log-probs of the chosen/rejected answers and ``rc, rr`` the reference's:

- ``sigmoid``: ``-log σ(β[(pc - rc) - (pr - rr)])``; rewards ``β(pc - rc)``, ``β(pr - rr)``;
- ``ipo``: ``([(pc - rc) - (pr - rr)] - 1/(2β))²``; same rewards;
- ``simpo``: ``-log σ(β(pc/|c| - pr/|r|) - γ)`` with length-averaged log-probs, no reference;
  rewards ``β·pc/|c|``, ``β·pr/|r|``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from weakwater.data.sft import IGNORE

DPO_LOSSES = ("sigmoid", "ipo", "simpo")


def weighted_token_ce(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of weight * cross-entropy, sum of weights); targets equal to -100 carry no loss."""
    ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="none")
    w = weights.flatten().to(ce.dtype)
    return (ce * w).sum(), w.sum()


def sequence_logps(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row summed log-prob of the supervised targets and the number of such tokens."""
    mask = targets != IGNORE
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1), mask.sum(-1)


@dataclass
class PreferenceOutput:
    losses: torch.Tensor  # (B,) one per pair
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def preference_loss(
    kind: str,
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor | None,
    ref_rejected: torch.Tensor | None,
    beta: float,
    chosen_len: torch.Tensor | None = None,
    rejected_len: torch.Tensor | None = None,
    simpo_gamma: float = 0.5,
) -> PreferenceOutput:
    """Per-pair losses and implicit rewards for ``kind`` in :data:`DPO_LOSSES` (see module docstring)."""
    if kind == "simpo":
        if chosen_len is None or rejected_len is None:
            raise ValueError("simpo needs the answer lengths")
        chosen = beta * policy_chosen / chosen_len.clamp(min=1)
        rejected = beta * policy_rejected / rejected_len.clamp(min=1)
        losses = -F.logsigmoid(chosen - rejected - simpo_gamma)
        return PreferenceOutput(losses, chosen.detach(), rejected.detach())
    if ref_chosen is None or ref_rejected is None:
        raise ValueError(f"{kind} needs reference log-probs")
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    h = chosen_ratio - rejected_ratio
    if kind == "sigmoid":
        losses = -F.logsigmoid(beta * h)
    elif kind == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss {kind!r}; choose one of {', '.join(DPO_LOSSES)}")
    return PreferenceOutput(losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach())
