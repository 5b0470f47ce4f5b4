"""The GRPO family's maths: group-relative advantages, the PPO-clipped surrogate, the k3 KL estimator and
the three ways of aggregating per-token losses. Pure tensor functions, checked by hand in the tests.

For completion ``i`` with reward ``r_i`` in a group of G samples of one prompt (Shao et al. 2024, GRPO):

- advantage ``A_i = (r_i - mean(r)) / (std(r) + eps)`` (the unbiased std, as TRL computes it);
  Dr. GRPO (Liu et al. 2025) drops the division: ``A_i = r_i - mean(r)``;
- per token t: ratio ``rho = exp(logp - logp_old)``; loss ``-min(rho * A, clip(rho, 1 - eps_low,
  1 + eps_high) * A)`` (PPO; DAPO's "clip higher" uses eps_high > eps_low), plus ``beta * KL`` with the k3
  estimator of KL(policy || reference), ``exp(ref - logp) - (ref - logp) - 1`` (Schulman 2020), which is
  >= 0, unbiased, and exactly 0 where both agree;
- aggregation (``loss_agg``), written as (sum, count) so the trainer's global normalisation applies:
  ``sequence`` (GRPO): each completion's token mean, averaged over completions: sum of means, count = N;
  ``token`` (DAPO): every token weighs the same: sum over tokens, count = number of tokens;
  ``constant`` (Dr. GRPO): sum over tokens divided by the max completion length, count = N, so neither the
  completion's own length nor the batch's token count rescales a token's gradient.

With one update per rollout batch ``logp_old`` is ``logp`` itself (detached), so the ratio is 1 and the
loss is the plain policy gradient; with several (``ppo_epochs``) it is the log-prob at rollout time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weakwater.model.loglik import per_sample_sum

LOSS_AGGREGATIONS = ("sequence", "token", "constant")


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """(N,) rewards of N/G consecutive groups -> (N,) advantages, normalised within each group."""
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"expected a flat tensor of groups of {group_size} rewards, got shape {tuple(rewards.shape)}")
    grouped = rewards.view(-1, group_size)
    adv = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped[:, :1])
        adv = adv / (std + eps)
    return adv.reshape(-1)


def equal_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N/G,) bool: groups whose rewards are all equal (their advantages are all 0: no learning signal)."""
    grouped = rewards.view(-1, group_size)
    return (grouped == grouped[:, :1]).all(dim=1)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference) from the sampled tokens' log-probs."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


@dataclass
class PolicyLossOutput:
    loss: torch.Tensor  # summed (see the module docstring), differentiable
    count: torch.Tensor  # what the sum is normalised by
    kl: torch.Tensor  # mean per-token KL (0 without a reference)
    clip_low: torch.Tensor  # share of tokens whose ratio was clipped below (negative advantage)
    clip_high: torch.Tensor  # ... clipped above (positive advantage)
    tokens: torch.Tensor  # completion tokens the three means above are taken over

    def token_means(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """kl / clip_low / clip_high as (sum, count) metrics: the trainer's global per-token means."""
        names = ("kl", "clip_low", "clip_high")
        return {name: (getattr(self, name).detach() * self.tokens, self.tokens) for name in names}


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    loss_agg: str = "sequence",
    max_new_tokens: int | None = None,
    segment_ids: torch.Tensor | None = None,
) -> PolicyLossOutput:
    """The clipped GRPO objective for (rows, T) per-token log-probs of the sampled completion tokens.

    ``mask`` (rows, T) marks completion tokens; ``advantages`` is (N,), one per completion. Without
    ``segment_ids`` row i is completion i (N = rows, right-padded); with them (packed rows) a token belongs
    to completion ``segment_ids[r, t]``. ``old_logp=None`` means one update per rollout (ratio 1).
    ``max_new_tokens`` is the ``constant`` aggregation's divisor.
    """
    if loss_agg not in LOSS_AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {loss_agg!r}; choose one of {', '.join(LOSS_AGGREGATIONS)}")
    mask = mask.to(logp.dtype)
    n_seq = advantages.shape[0]
    if segment_ids is None:
        segment_ids = torch.arange(logp.shape[0], device=logp.device)[:, None].expand_as(logp)
    old = logp.detach() if old_logp is None else old_logp
    ratio = torch.exp(logp - old)
    adv = advantages.to(logp.dtype)[segment_ids.clamp(min=0)]  # each token's completion's advantage
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv
    per_token = -torch.min(unclipped, clipped)
    kl = torch.zeros_like(logp)
    if ref_logp is not None and beta != 0:
        kl = k3_kl(logp, ref_logp)
        per_token = per_token + beta * kl
    n = torch.tensor(float(n_seq), device=logp.device)
    if loss_agg == "sequence":
        lengths = per_sample_sum(mask, segment_ids, n_seq)
        loss = (per_sample_sum(per_token * mask, segment_ids, n_seq) / lengths.clamp(min=1)).sum()
        count = n
    elif loss_agg == "token":
        loss = (per_token * mask).sum()
        count = mask.sum()
    else:
        if not max_new_tokens:
            raise ValueError("the constant (Dr. GRPO) aggregation needs max_new_tokens")
        loss = (per_token * mask).sum() / max_new_tokens
        count = n
    with torch.no_grad():
        total = mask.sum()
        tokens = total.clamp(min=1)
        low = ((ratio < 1 - eps_low) & (adv < 0)).to(mask.dtype) * mask
        high = ((ratio > 1 + eps_high) & (adv > 0)).to(mask.dtype) * mask
        stats = (kl.detach() * mask).sum() / tokens, low.sum() / tokens, high.sum() / tokens
    return PolicyLossOutput(loss, count, *stats, total)


@torch.no_grad()
def token_entropy_sum(logits: torch.Tensor, mask: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, int]:
    """(summed entropy in nats, number of positions) of the next-token distributions at the masked
    positions, chunked to bound memory: a (sum, count) metric."""
    rows = logits[mask.bool()]
    total = torch.zeros((), device=logits.device, dtype=torch.float32)
    for start in range(0, rows.shape[0], chunk):
        part = rows[start : start + chunk].float()
        logp = torch.log_softmax(part, dim=-1)
        total += -(logp.exp() * logp).sum()
    return total, rows.shape[0]
