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

from weakwater.model.loglik import IGNORE_INDEX, token_logprobs

DPO_LOSSES = ("sigmoid", "ipo", "simpo")


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed negative log-likelihood of the scored labels, how many were scored): pretraining's loss."""
    return -token_logprobs(logits, labels).sum(), (labels != IGNORE_INDEX).sum().float()


def weighted_token_nll(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of weight x negative log-likelihood, sum of weights): SFT (weights 0/1) and distillation
    (tag tokens weighted up). Ignored labels score 0 whatever their weight."""
    w = weights.to(torch.float32)
    return -(token_logprobs(logits, labels) * w).sum(), w.sum()


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


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    temperature: float = 1.0,
    alpha: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """White-box distillation (Hinton et al. 2015): per scored token,
    ``alpha * tau^2 * KL(teacher_tau || student_tau) - (1 - alpha) * log p(label)``, where ``_tau`` is the
    softmax at temperature tau (tau^2 keeps the soft term's gradient scale independent of tau). Returns
    (sum of weight * loss, sum of weights) like :func:`weighted_token_nll`; the KL term is 0 when the
    teacher's logits equal the student's."""
    nll, count = weighted_token_nll(student_logits, labels, weights)
    mask = (labels != IGNORE_INDEX).flatten()
    s = student_logits.flatten(0, 1)[mask].float()
    t = teacher_logits.flatten(0, 1)[mask].float()
    w = weights.flatten()[mask].to(torch.float32)
    log_s = torch.log_softmax(s / temperature, dim=-1)
    log_t = torch.log_softmax(t / temperature, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1) * temperature**2
    return alpha * (kl * w).sum() + (1 - alpha) * nll, count
