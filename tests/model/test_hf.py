"""The one HF mapping: our model and transformers' model built from it compute the same logits and
gradients, and the config (RoPE scaling included) survives the trip through transformers."""

import pytest
import torch

from weakwater.model import ModelConfig, RopeScaling, Transformer
from weakwater.model.hf import (
    architecture,
    from_hf_config,
    from_hf_state_dict,
    hf_model,
    to_hf_config,
    to_hf_state_dict,
)

transformers = pytest.importorskip("transformers")


def small_config(**kw) -> ModelConfig:
    base = dict(vocab_size=300, dim=64, n_layers=3, n_heads=8, n_kv_heads=2, max_seq_len=64, tie_embeddings=False)
    return ModelConfig(**{**base, **kw})


YARN_BETAS = RopeScaling("yarn", 4.0, 16, beta_fast=4.0, beta_slow=0.5)
CASES = {
    "gqa": {},
    "tied": {"tie_embeddings": True},
    "mha": {"n_kv_heads": 8},
    "linear-rope": {"rope_scaling": RopeScaling("linear", 2.0, 32)},
    "yarn-rope": {"rope_scaling": RopeScaling("yarn", 4.0, 16)},
    # betas away from the defaults, on a shape where they move the ramp: dropping them changes the logits
    "yarn-betas": {"n_heads": 2, "n_kv_heads": 1, "rope_theta": 1e4, "rope_scaling": YARN_BETAS},
    # QK-norm maps to Qwen3ForCausalLM
    "qk-norm": {"qk_norm": True},
    "qk-norm-tied-yarn": {"qk_norm": True, "tie_embeddings": True, "rope_scaling": RopeScaling("yarn", 4.0, 16)},
}


def small_model(**overrides) -> Transformer:
    """A random model; QK-norm gains drawn away from 1, where dropping or swapping them would change nothing."""
    torch.manual_seed(0)
    model = Transformer(small_config(**overrides))
    if model.config.qk_norm:
        with torch.no_grad():
            for layer in model.layers:
                layer.self_attn.q_norm.weight.uniform_(0.5, 2.0)
                layer.self_attn.k_norm.weight.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_logits_equal_hf(overrides):
    model = small_model(**overrides).eval()
    hf = hf_model(model).eval()
    assert type(hf).__name__ == ("Qwen3ForCausalLM" if model.config.qk_norm else "LlamaForCausalLM")
    ids = torch.randint(0, 300, (2, 48))  # past the original context of the scaled cases
    with torch.no_grad():
        ours = model(ids)
        theirs = hf(ids).logits
    assert (ours - theirs).abs().max().item() < 1e-4


def test_dropping_yarn_betas_changes_the_logits():
    """The yarn-betas case above can fail: the default betas give other logits (by 10x the tolerance)."""
    torch.manual_seed(0)
    overrides = CASES["yarn-betas"]
    model = Transformer(small_config(**overrides)).eval()
    default_betas = Transformer(small_config(**{**overrides, "rope_scaling": RopeScaling("yarn", 4.0, 16)})).eval()
    default_betas.load_state_dict(model.state_dict())
    ids = torch.randint(0, 300, (1, 48))
    with torch.no_grad():
        assert (model(ids) - default_betas(ids)).abs().max().item() > 1e-3


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_config_round_trips_through_transformers(overrides):
    config = small_config(**overrides)
    config_class = getattr(transformers, architecture(config).class_name.replace("ForCausalLM", "Config"))
    hf = config_class(**to_hf_config(config))
    assert from_hf_config(hf.to_dict()) == config
    assert from_hf_config(to_hf_config(config)) == config  # as written in config.json


def test_transformers_4_rope_spelling_is_read():
    legacy = to_hf_config(small_config(rope_scaling=YARN_BETAS))
    del legacy["rope_parameters"]
    assert from_hf_config(legacy).rope_scaling == YARN_BETAS


@pytest.mark.parametrize(
    "change,match",
    [
        ({"model_type": "gpt2"}, "model_type"),
        ({"attention_bias": True}, "attention_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"model_type": "qwen3", "use_sliding_window": True}, "use_sliding_window"),
    ],
)
def test_unsupported_hf_configs_are_refused(change, match):
    with pytest.raises(ValueError, match=match):
        from_hf_config({**to_hf_config(small_config()), **change})


@pytest.mark.parametrize("qk_norm", [False, True], ids=["llama", "qwen3"])
def test_training_path_matches_hf_logits_and_grads(qk_norm):
    """On the training path (grad enabled) the logits and every gradient equal HF's."""
    model = small_model(qk_norm=qk_norm).train()
    hf = hf_model(model).train()
    ids = torch.randint(0, 300, (2, 32))
    ours, theirs = model(ids), hf(ids).logits
    assert (ours - theirs).abs().max().item() < 1e-4
    ours.square().mean().backward()
    theirs.square().mean().backward()
    hf_params = dict(hf.named_parameters())
    for name, p in model.named_parameters():
        ref = hf_params[name if name == "lm_head.weight" else f"model.{name}"].grad
        assert (p.grad - ref).abs().max().item() < 1e-5, name


@pytest.mark.parametrize("tie,qk_norm", [(True, False), (False, False), (True, True)], ids=["tied", "untied", "qwen3"])
def test_weights_round_trip_through_hf_names(tie, qk_norm):
    model = small_model(tie_embeddings=tie, qk_norm=qk_norm)
    hf_state = hf_model(model).state_dict()
    assert hf_state.keys() >= to_hf_state_dict(model.state_dict(), model.config).keys()
    back = Transformer(small_config(tie_embeddings=tie, qk_norm=qk_norm))
    back.load_state_dict(from_hf_state_dict(hf_state, model.config))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    with pytest.raises(ValueError, match="unexpected HF weight"):
        from_hf_state_dict({"transformer.wte.weight": torch.zeros(1)}, model.config)
