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


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row summed log-probability of the scored labels, and how many labels each row scores."""
    return token_logprobs(logits, labels).sum(-1), (labels != IGNORE_INDEX).sum(-1)
