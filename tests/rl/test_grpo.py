"""GRPO-family maths against values worked out by hand on fixed tiny batches."""

from __future__ import annotations

import math

import pytest
import torch

from weakwater.rl.grpo import equal_groups, group_advantages, k3_kl, policy_loss, token_entropy_sum

REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])


def test_group_advantages_grpo_and_dr_grpo():
    # Group 1: mean 0.5, unbiased std sqrt((4 * 0.25) / 3) = sqrt(1/3); group 2: all equal -> 0.
    scale = math.sqrt(1 / 3) + 1e-4
    expected = torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]) / torch.tensor([scale] * 4 + [1.0] * 4)
    assert torch.allclose(group_advantages(REWARDS, 4), expected, atol=1e-6)
    assert torch.allclose(group_advantages(REWARDS, 4, scale=False), torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))
    assert equal_groups(REWARDS, 4).tolist() == [False, True]
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(REWARDS, 3)


def test_k3_kl_by_hand_and_its_expectation_is_the_kl():
    logp, ref = torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-1.0, -1.0, -1.0])
    # delta = ref - logp = 0, 1, 2 -> e^d - d - 1 = 0, e - 2, e^2 - 3
    assert torch.allclose(k3_kl(logp, ref), torch.tensor([0.0, math.e - 2, math.e**2 - 3]))
    # Averaged over samples from the policy p it is unbiased: sum_x p(x) k3 = KL(p || q).
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.2, 0.6])
    kl = (p * (p / q).log()).sum()
    assert torch.allclose((p * k3_kl(p.log(), q.log())).sum(), kl)
    assert (k3_kl(p.log(), q.log()) >= 0).all()


# Two completions, three token slots; the second has two tokens. Advantages +1 and -1.
LOGP = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.0, 0.0]])
OLD = torch.tensor([[-1.0, -2.5, -2.0], [-0.5, -0.5, 0.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
ADV = torch.tensor([1.0, -1.0])
# ratios exp(logp - old): row 0: 1, e^0.5 = 1.6487 (clipped to 1.2), e^-1 = 0.3679 (below 0.8 but A > 0: kept)
# row 1: 1, e^-0.5 = 0.6065 (A < 0: min(-0.6065, -0.8) = -0.8, clipped)
ROW0 = [-1.0, -1.2, -math.exp(-1)]  # per-token losses -min(r A, clip(r) A)
ROW1 = [1.0, 0.8]


def test_policy_loss_aggregations_by_hand():
    seq = policy_loss(LOGP, OLD, ADV, MASK, loss_agg="sequence")
    assert seq.loss.item() == pytest.approx(sum(ROW0) / 3 + sum(ROW1) / 2, abs=1e-6)
    assert seq.count.item() == 2
    tok = policy_loss(LOGP, OLD, ADV, MASK, loss_agg="token")
    assert tok.loss.item() == pytest.approx(sum(ROW0) + sum(ROW1), abs=1e-6)
    assert tok.count.item() == 5
    const = policy_loss(LOGP, OLD, ADV, MASK, loss_agg="constant", max_new_tokens=4)
    assert const.loss.item() == pytest.approx((sum(ROW0) + sum(ROW1)) / 4, abs=1e-6)
    assert const.count.item() == 2
    assert seq.clip_low.item() == pytest.approx(1 / 5) and seq.clip_high.item() == pytest.approx(1 / 5)
    assert seq.kl.item() == 0


def test_clipped_tokens_get_no_gradient():
    logp = LOGP.clone().requires_grad_(True)
    policy_loss(logp, OLD, ADV, MASK, loss_agg="sequence").loss.backward()
    # d/dlogp of -r*A/len = -r*A/len where unclipped; 0 where the clipped branch was the minimum; 0 when masked.
    expected = torch.tensor([[-1 / 3, 0.0, -math.exp(-1) / 3], [1 / 2, 0.0, 0.0]])
    assert torch.allclose(logp.grad, expected, atol=1e-6)


def test_asymmetric_clip_and_one_update_ratio():
    # eps_high 0.7 lets row 0's ratio 1.6487 through (DAPO's clip-higher).
    out = policy_loss(LOGP, OLD, ADV, MASK, eps_low=0.2, eps_high=0.7, loss_agg="token")
    assert out.loss.item() == pytest.approx(-1 - math.exp(0.5) - math.exp(-1) + 1 + 0.8, abs=1e-6)
    assert out.clip_high.item() == 0
    # old_logp None (one update per rollout): ratio 1, the loss is -A per token, gradient -A / len.
    logp = LOGP.clone().requires_grad_(True)
    plain = policy_loss(logp, None, ADV, MASK, loss_agg="sequence")
    assert plain.loss.item() == pytest.approx(-1 + 1, abs=1e-6)
    plain.loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-1 / 3] * 3, [0.5, 0.5, 0.0]]))


def test_kl_term_is_added_per_token():
    ref = torch.tensor([[-1.0, -1.0, -1.0], [-0.5, -1.0, 5.0]])  # the masked slot must not count
    out = policy_loss(LOGP, LOGP.detach(), ADV, MASK, ref_logp=ref, beta=0.5, loss_agg="token")
    kl_tokens = [0.0, math.e - 2, math.e**2 - 3, 0.0, 0.0]
    assert out.loss.item() == pytest.approx(-3 + 2 + 0.5 * sum(kl_tokens), abs=1e-5)
    assert out.kl.item() == pytest.approx(sum(kl_tokens) / 5, abs=1e-6)
    # beta 0 ignores any reference
    assert policy_loss(LOGP, None, ADV, MASK, ref_logp=ref, beta=0.0, loss_agg="token").kl.item() == 0


def test_token_entropy():
    logits = torch.log(torch.tensor([[[0.5, 0.5, 1e-30], [1.0, 1e-30, 1e-30]]]))
    total, n = token_entropy_sum(logits, torch.tensor([[True, False]]))
    assert n == 1 and total.item() == pytest.approx(math.log(2), abs=1e-5)
    total, n = token_entropy_sum(logits, torch.tensor([[True, True]]), chunk=1)
    assert n == 2 and total.item() == pytest.approx(math.log(2), abs=1e-5)
    assert token_entropy_sum(logits, torch.tensor([[False, False]]))[1] == 0


def test_packed_rows_give_the_padded_losses():
    """The two completions back to back in one row (segment ids 0 0 0 1 1) give the same sums and counts."""
    logp = torch.cat([LOGP[0], LOGP[1, :2]])[None]
    old = torch.cat([OLD[0], OLD[1, :2]])[None]
    mask = torch.ones(1, 5, dtype=torch.bool)
    segments = torch.tensor([[0, 0, 0, 1, 1]])
    for agg in ("sequence", "token", "constant"):
        padded = policy_loss(LOGP, OLD, ADV, MASK, loss_agg=agg, max_new_tokens=4)
        packed = policy_loss(logp, old, ADV, mask, loss_agg=agg, max_new_tokens=4, segment_ids=segments)
        assert packed.loss.item() == pytest.approx(padded.loss.item(), abs=1e-6), agg
        assert packed.count.item() == padded.count.item()
        assert packed.clip_low.item() == pytest.approx(padded.clip_low.item())
