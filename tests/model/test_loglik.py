"""The one token log-likelihood against values worked out by hand, and the losses built on it."""

from __future__ import annotations

import math

import pytest
import torch

from weakwater.model.loglik import IGNORE_INDEX, sequence_logprobs, token_logprobs
from weakwater.train.losses import token_nll, weighted_token_nll


def logits_by_hand() -> torch.Tensor:
    """One row of 4 positions over 2 tokens: p(0) = 3/4 at position 0, uniform elsewhere."""
    logits = torch.zeros(1, 4, 2)
    logits[0, 0] = torch.tensor([math.log(3.0), 0.0])
    return logits


def test_token_logprobs_by_hand_and_ignored_positions_score_zero():
    labels = torch.tensor([[0, 1, IGNORE_INDEX, 1]])
    got = token_logprobs(logits_by_hand(), labels)
    assert got.dtype == torch.float32 and got.shape == labels.shape
    assert got[0].tolist() == pytest.approx([math.log(0.75), math.log(0.5), 0.0, math.log(0.5)])


def test_token_logprobs_of_bf16_logits_are_computed_in_fp32():
    logits = torch.randn(2, 3, 50)
    labels = torch.randint(0, 50, (2, 3))
    expected = torch.log_softmax(logits.bfloat16().float(), -1).gather(-1, labels[..., None])[..., 0]
    got = token_logprobs(logits.bfloat16(), labels)
    assert got.dtype == torch.float32 and torch.allclose(got, expected, atol=1e-6)


def test_sequence_logprobs_sum_per_row_and_count_scored_labels():
    labels = torch.tensor([[0, 1, IGNORE_INDEX, 1]])
    total, n = sequence_logprobs(logits_by_hand(), labels)
    assert n.tolist() == [3] and total.item() == pytest.approx(math.log(0.75) + 2 * math.log(0.5))


def test_token_nll_and_weighted_nll_by_hand():
    labels = torch.tensor([[0, 1, IGNORE_INDEX, 1]])
    total, count = token_nll(logits_by_hand(), labels)
    assert count.item() == 3 and total.item() == pytest.approx(-math.log(0.75) - 2 * math.log(0.5))
    weights = torch.tensor([[2.0, 1.0, 5.0, 0.0]])  # the weight on an ignored label changes nothing
    total, weight = weighted_token_nll(logits_by_hand(), labels, weights)
    assert weight.item() == 8.0 and total.item() == pytest.approx(-2 * math.log(0.75) - math.log(0.5))
