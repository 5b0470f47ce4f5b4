"""The KV cache equals a full forward; padding, parameter counts and shape checks (HF parity: test_hf.py)."""

import pytest
import torch

from weakwater.model import KVCache, ModelConfig, Transformer


def small_config(**kw) -> ModelConfig:
    base = dict(vocab_size=300, dim=64, n_layers=3, n_heads=8, n_kv_heads=2, max_seq_len=64, tie_embeddings=False)
    return ModelConfig(**{**base, **kw})


def randomize_qk_gains(model: Transformer) -> Transformer:
    """QK-norm gains start at 1, where swapping or misplacing them changes nothing; make them matter."""
    with torch.no_grad():
        for layer in model.layers:
            layer.self_attn.q_norm.weight.uniform_(0.5, 2.0)
            layer.self_attn.k_norm.weight.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("qk_norm", [False, True], ids=["plain", "qk-norm"])
def test_kv_cache_decoding_equals_full_forward(qk_norm):
    torch.manual_seed(0)
    model = Transformer(small_config(qk_norm=qk_norm)).eval()
    if qk_norm:
        randomize_qk_gains(model)
    ids = torch.randint(0, 300, (2, 40))
    with torch.no_grad():
        full = model(ids)
        cache = KVCache(model.config, batch_size=2, max_len=40, device="cpu", dtype=torch.float32)
        steps = [model(ids[:, :16], kv_cache=cache)]  # prefill
        steps.append(model(ids[:, 16:20], kv_cache=cache))  # a multi-token chunk after a prefix
        steps += [model(ids[:, t : t + 1], kv_cache=cache) for t in range(20, 40)]
    assert cache.length == 40
    assert (torch.cat(steps, dim=1) - full).abs().max().item() < 1e-4


def test_left_padding_matches_unpadded():
    torch.manual_seed(0)
    model = Transformer(small_config()).eval()
    ids = torch.randint(1, 300, (1, 10))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3), torch.ones(1, 10)], dim=1).long()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        plain = model(ids)
        out = model(padded, attention_mask=mask, position_ids=positions)
    assert torch.isfinite(out).all()
    assert (out[:, 3:] - plain).abs().max().item() < 1e-4


def test_param_count_matches_config():
    for kw in ({}, {"tie_embeddings": True}, {"qk_norm": True}):
        model = Transformer(small_config(**kw))
        assert model.num_params() == model.config.num_params()


def test_qk_norm_makes_attention_blind_to_q_and_k_scale():
    """QK-norm: scaling q_proj/k_proj rows per head changes nothing (the per-head RMSNorm undoes it),
    while the same scaling changes a plain model's logits; the gains then set each dimension's scale."""
    torch.manual_seed(0)
    ids = torch.randint(0, 300, (2, 24))
    for qk_norm in (True, False):
        model = Transformer(small_config(qk_norm=qk_norm, norm_eps=1e-12)).eval()  # eps would blur the scale
        with torch.no_grad():
            before = model(ids)
            for layer in model.layers:
                layer.self_attn.q_proj.weight.mul_(30.0)
                layer.self_attn.k_proj.weight.mul_(5.0)
            diff = (model(ids) - before).abs().max().item()
        assert diff < 1e-4 if qk_norm else diff > 1e-2
    names = {n for n, _ in model.named_parameters()}
    qk_model = Transformer(small_config(qk_norm=True))
    extra = {n for n, _ in qk_model.named_parameters()} - names
    assert extra == {f"layers.{i}.self_attn.{q}_norm.weight" for i in range(3) for q in "qk"}
    assert all(torch.equal(p, torch.ones(8)) for n, p in qk_model.named_parameters() if n in extra)


def test_invalid_shapes_are_rejected_with_a_reason():
    with pytest.raises(ValueError, match="n_kv_heads"):
        small_config(n_kv_heads=3)
    with pytest.raises(ValueError, match="divisible by n_heads"):
        small_config(dim=66)
