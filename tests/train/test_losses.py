"""The training losses of train/losses.py against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from weakwater.model.loglik import IGNORE_INDEX
from weakwater.train.losses import distillation_loss, preference_loss

# Two pairs: policy chosen/rejected log-probs, reference chosen/rejected log-probs.
PC, PR = torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -2.0])
RC, RR = torch.tensor([-2.0, -3.0]), torch.tensor([-2.0, -3.0])


def test_sigmoid_dpo_by_hand():
    out = preference_loss("sigmoid", PC, PR, RC, RR, beta=0.5)
    # pair 1: ratios +1 / -1, h = 2, loss = -log sigmoid(0.5 * 2) = log(1 + e^-1); pair 2: h = -2.
    assert out.losses.tolist() == pytest.approx([math.log1p(math.exp(-1)), math.log1p(math.exp(1))])
    assert out.chosen_rewards.tolist() == pytest.approx([0.5, -0.5])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.5, 0.5])


def test_ipo_by_hand():
    out = preference_loss("ipo", PC, PR, RC, RR, beta=0.5)
    assert out.losses.tolist() == pytest.approx([(2 - 1) ** 2, (-2 - 1) ** 2])  # (h - 1/(2 beta))^2


def test_simpo_by_hand():
    out = preference_loss("simpo", PC, PR, None, None, beta=2.0, chosen_len=torch.tensor([2, 1]),
                          rejected_len=torch.tensor([4, 4]), simpo_gamma=0.5)  # fmt: skip
    # pair 1: 2*(-1/2) - 2*(-3/4) - 0.5 = 0 -> log 2; pair 2: 2*(-4) - 2*(-2/4) - 0.5 = -7.5
    assert out.losses.tolist() == pytest.approx([math.log(2), math.log1p(math.exp(7.5))])
    assert out.chosen_rewards.tolist() == pytest.approx([-1.0, -8.0])


def test_distillation_loss_by_hand():
    # One supervised token with V = 2: student uniform, teacher logits (ln 3, 0) -> p_t = (3/4, 1/4).
    student = torch.zeros(1, 2, 2)
    teacher = torch.tensor([[[math.log(3), 0.0], [5.0, 0.0]]])
    targets = torch.tensor([[0, IGNORE_INDEX]])  # the second position must not count
    weights = torch.tensor([[1.0, 0.0]])  # the collator's weights: 0 where nothing is scored
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    ce = math.log(2)
    total, count = distillation_loss(student, teacher, targets, weights, temperature=1.0, alpha=0.5)
    assert total.item() == pytest.approx(0.5 * kl + 0.5 * ce, abs=1e-6) and count.item() == 1
    # tau = 2: p_t = softmax(ln3 / 2, 0) = (sqrt3, 1) / (sqrt3 + 1); the KL is scaled by tau^2 = 4
    pt = torch.tensor([math.sqrt(3), 1.0]) / (math.sqrt(3) + 1)
    kl2 = float((pt * (pt / 0.5).log()).sum())
    total, _ = distillation_loss(student, teacher, targets, weights * 3, temperature=2.0, alpha=1.0)
    assert total.item() == pytest.approx(3 * 4 * kl2, abs=1e-6)  # token weight 3


def test_kl_term_is_zero_when_teacher_is_student():
    logits = torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    targets[0, :2] = IGNORE_INDEX
    weights = (targets != IGNORE_INDEX).float()
    total, count = distillation_loss(logits, logits.clone(), targets, weights, temperature=2.0, alpha=1.0)
    assert total.abs().item() < 1e-5 and count.item() == 8
