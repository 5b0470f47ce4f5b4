"""Optimizers and schedules: values worked out by hand, the Muon/AdamW split, and exact resume with Muon."""

from __future__ import annotations

import math

import pytest
import torch

from weakwater.model import ModelConfig, Transformer
from weakwater.train.config import ConfigError
from weakwater.train.optim import MuonWithAdamW, build_optimizer, lr_factor, split_parameters


def test_cosine_factor_by_hand():
    assert [lr_factor(s, 10, 2, "cosine", 0.1) for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(2, 10, 2, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(6, 10, 2, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(10, 10, 2, "cosine", 0.1) == pytest.approx(0.1)


def test_warmup_stable_decay_factor_by_hand():
    # 10 steps, 2 of warmup, half of the remaining 8 decaying linearly to 0
    got = [lr_factor(s, 10, 2, "wsd", 0.0, 0.5) for s in range(10)]
    assert got == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0])
    assert lr_factor(9, 10, 0, "wsd", 0.1, 0.5) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, 10, 0, "linear")


def tiny() -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16))


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    model = tiny()
    matrices, others = split_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)].rsplit(".", 2)[-2] for p in matrices} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    }  # fmt: skip
    assert all(p.ndim == 1 or "embed" in names[id(p)] for p in others)
    opt = build_optimizer(model, "muon", 1e-3, (0.9, 0.95), 0.1, fused=False)
    assert isinstance(opt, MuonWithAdamW)
    assert len(opt.param_groups) == 2 and opt.param_groups[0]["params"] == matrices
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randint(0, 50, (2, 8))).square().mean().backward()
    for g in opt.param_groups:
        g["lr"] = 2e-3  # what the trainer does every step: reaches both optimizers
    opt.step()
    assert opt.muon.param_groups[0]["lr"] == opt.adamw.param_groups[0]["lr"] == 2e-3
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    again = build_optimizer(tiny(), "muon", 1e-3, (0.9, 0.95), 0.1, fused=False)
    again.load_state_dict(opt.state_dict())
    assert again.state_dict()["muon"]["state"].keys() == opt.state_dict()["muon"]["state"].keys()


def test_muon_is_refused_with_fsdp(tmp_path):
    from weakwater.train.config import TrainConfig

    with pytest.raises(ConfigError, match="muon"):
        TrainConfig(data=str(tmp_path), optimizer="muon", fsdp=True).validate()
    with pytest.raises(ConfigError, match="--optimizer"):
        TrainConfig(data=str(tmp_path), optimizer="sgd").validate()
