"""Logit transforms: top-k, top-p, repetition penalty, seeded sampling."""

from __future__ import annotations

import pytest
import torch

from weakwater.infer.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    sample_row,
    top_k_filter,
    top_p_filter,
)


def test_top_k_keeps_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    out = top_k_filter(logits, 2)
    assert torch.isfinite(out).tolist() == [[False, True, False, True, False]]
    assert torch.equal(top_k_filter(logits, 0), logits)


def test_top_p_keeps_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert torch.isfinite(top_p_filter(logits, 0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.81)).tolist() == [[True, True, True, False]]
    # The most likely token always survives, even with a tiny p.
    assert torch.isfinite(top_p_filter(logits, 1e-6)).tolist() == [[True, False, False, False]]


def test_top_p_respects_original_order():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    kept = torch.isfinite(top_p_filter(logits, 0.7))
    assert kept[0, 1] and not kept[0, 0]


def test_repetition_penalty_lowers_seen_tokens_both_signs():
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = apply_repetition_penalty(logits, seen, torch.tensor([[2.0]]))
    assert out.tolist() == [[1.0, -4.0, 2.0, -2.0]]


def test_seeded_sampling_is_reproducible_and_seed_dependent():
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    p = SamplingParams(temperature=1.0, seed=7)
    a = [sample_row(logits, p, g) for g in [p.make_generator()] for _ in range(20)]
    b = [sample_row(logits, p, g) for g in [p.make_generator()] for _ in range(20)]
    q = SamplingParams(temperature=1.0, seed=8)
    c = [sample_row(logits, q, g) for g in [q.make_generator()] for _ in range(20)]
    assert a == b and a != c


def test_unseeded_generators_differ():
    p = SamplingParams(temperature=1.0)
    assert p.make_generator().initial_seed() != p.make_generator().initial_seed()


@pytest.mark.parametrize(
    "kwargs", [dict(temperature=-1), dict(top_p=0), dict(top_p=1.5), dict(top_k=-1), dict(max_new_tokens=-1)]
)
def test_invalid_params_raise(kwargs):
    with pytest.raises(ValueError):
        SamplingParams(**kwargs)
