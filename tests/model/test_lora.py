"""LoRA: starts at the base model, trains only adapters, disables, merges and round-trips in PEFT's layout."""

from __future__ import annotations

import json

import pytest
import torch

from weakwater.model import ModelConfig, Transformer
from weakwater.model.lora import (
    LoRALinear,
    apply_lora,
    load_adapter,
    lora_disabled,
    merge_lora,
    save_adapter,
    trainable_params,
    trainable_summary,
)


def tiny(**overrides) -> Transformer:
    torch.manual_seed(0)
    shape = dict(vocab_size=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32)
    return Transformer(ModelConfig(**{**shape, **overrides}))


def randomize_b(model: Transformer, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.05


X = torch.tensor([[1, 5, 9, 33, 60, 2]])


def test_apply_lora_starts_at_base_and_trains_only_adapters():
    model = tiny()
    with torch.no_grad():
        before = model(X)
    apply_lora(model, rank=4, alpha=8, targets=("q_proj", "v_proj"))
    with torch.no_grad():
        assert torch.equal(model(X), before)  # B = 0
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert {n.split(".")[3] for n in names} == {"q_proj", "v_proj"}
    assert model.layers[0].self_attn.q_proj.scale == 2.0
    trainable, total = trainable_params(model)
    # v_proj maps dim 32 -> n_kv_heads * head_dim = 16, so its A is 4x32 and B is 16x4.
    assert trainable == 2 * (4 * 32 + 32 * 4) + 2 * (4 * 32 + 16 * 4)
    assert total == model.config.num_params() + trainable
    assert "trainable params:" in trainable_summary(model) and "%" in trainable_summary(model)
    loss = model(X).logsumexp(-1).mean()
    loss.backward()
    assert model.layers[0].self_attn.q_proj.weight.grad is None
    assert model.layers[0].self_attn.q_proj.lora_B.weight.grad is not None


def test_bad_targets_rejected():
    with pytest.raises(ValueError, match="no linear layer matches"):
        apply_lora(tiny(), rank=4, alpha=8, targets=("qproj",))


def test_disable_and_merge():
    model = tiny()
    with torch.no_grad():
        base = model(X)
    apply_lora(model, rank=4, alpha=16)
    randomize_b(model)
    with torch.no_grad():
        adapted = model(X)
        assert not torch.allclose(adapted, base, atol=1e-4)
        with lora_disabled(model):
            assert torch.allclose(model(X), base, atol=1e-6)
        assert torch.equal(model(X), adapted)  # re-enabled afterwards
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert torch.allclose(model(X), adapted, atol=1e-5)
    assert set(model.state_dict()) == set(tiny().state_dict())


def test_save_load_adapter_peft_layout(tmp_path):
    model = tiny()
    apply_lora(model, rank=4, alpha=8, targets=("q_proj", "down_proj"), dropout=0.1)
    randomize_b(model)
    model.eval()
    save_adapter(model, tmp_path, base_model_name_or_path="org/base")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (4, 8.0, 0.1)
    assert config["target_modules"] == ["down_proj", "q_proj"]
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / "adapter_model.safetensors")))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in keys
    assert len(keys) == 2 * 2 * 2

    fresh = tiny()
    load_adapter(fresh, tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(fresh(X), model(X))


def test_load_adapter_shape_mismatch(tmp_path):
    model = tiny()
    apply_lora(model, rank=4, alpha=8)
    save_adapter(model, tmp_path)
    other = tiny()
    apply_lora(other, rank=2, alpha=8)
    with pytest.raises(ValueError, match="shape"):
        load_adapter(other, tmp_path)
    with pytest.raises(FileNotFoundError, match="nope: not a LoRA adapter directory .no adapter_config.json"):
        load_adapter(tiny(), tmp_path / "nope")
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="adapter_config.json: invalid JSON"):
        load_adapter(tiny(), tmp_path)


def test_lora_trains_and_merges_on_a_qk_norm_model(tmp_path):
    """QK-norm gains are frozen base weights like every other; adapters (q/k through the per-head
    norm) train, merge exactly and reload from PEFT's layout."""
    model = tiny(qk_norm=True)
    with torch.no_grad():
        for layer in model.layers:
            layer.self_attn.q_norm.weight.uniform_(0.5, 2.0)
    gains = model.layers[1].self_attn.q_norm.weight.detach().clone()
    apply_lora(model, rank=4, alpha=8)
    assert not model.layers[1].self_attn.q_norm.weight.requires_grad
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    y = torch.roll(X, -1, dims=1)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(X)[0], y[0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]  # 4.58 -> 3.93 (tiny init: small logits move slowly)
    assert model.layers[0].self_attn.k_proj.lora_A.weight.grad is not None  # k_proj's path runs through k_norm
    assert torch.equal(model.layers[1].self_attn.q_norm.weight, gains)
    model.eval()
    save_adapter(model, tmp_path)
    with torch.no_grad():
        adapted = model(X)
        reloaded = load_adapter(tiny(qk_norm=True), tmp_path).eval()
        for layer, src in zip(reloaded.layers, model.layers):  # the same base weights as the trained model
            layer.self_attn.q_norm.weight.copy_(src.self_attn.q_norm.weight)
        assert torch.allclose(reloaded(X), adapted, atol=1e-6)
        merge_lora(model)
        assert torch.allclose(model(X), adapted, atol=1e-5)
