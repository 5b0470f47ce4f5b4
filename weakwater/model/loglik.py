"""The one token log-likelihood: every loss and score in the package is built from :func:`token_logprobs`.

Pretraining, SFT/distillation (weighted), DPO (per-sequence sums), perplexity, multiple-choice scoring and
the demo's report card all need "log p(label | prefix)" per position. Computing it once, in fp32, with
one ignore index means a masking or precision fix lands everywhere at the same time.

Batches carry ``input_ids`` and ``labels`` of the same shape: ``labels[b, t]`` is the token the model
should predict after ``input_ids[b, : t + 1]``, or :data:`IGNORE_INDEX` where nothing is scored
(prompt, padding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# PyTorch's own default ``ignore_index``: positions with this label carry no loss and no score.
IGNORE_INDEX = -100


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` fp32 log-probability of each label under ``logits`` ``(B, T, V)``; 0 where ignored.

    ``cross_entropy(reduction="none")`` is log-softmax + pick in one fused kernel, computed in fp32
    even when the logits come out of bf16 autocast (a bf16 log-softmax over 6k+ classes loses digits).
    """
    nll = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
    return -nll.view(labels.shape)


def sequence_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, segment_ids: torch.Tensor | None = None, n: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence summed log-probability of the scored labels, and how many labels each scores.

    One sequence per row; or, for packed rows (:mod:`weakwater.data.packing`), the ``n`` sequences
    that ``segment_ids`` tells apart.
    """
    logps, scored = token_logprobs(logits, labels), (labels != IGNORE_INDEX).long()
    if segment_ids is None:
        return logps.sum(-1), scored.sum(-1)
    return per_sample_sum(logps, segment_ids, n), per_sample_sum(scored, segment_ids, n)


def per_sample_sum(values: torch.Tensor, segment_ids: torch.Tensor, n: int) -> torch.Tensor:
    """(n,) sums of per-token ``values`` (rows, width) by packed sample; padding (segment -1) is dropped."""
    keep = segment_ids >= 0
    flat = torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device)).flatten()
    return torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(
        0, segment_ids.clamp(min=0).flatten(), flat
    )
