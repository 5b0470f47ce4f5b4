"""The one mapping between our ``Transformer`` and Hugging Face transformers' causal-LM classes.

Export (``export/hf.py``), the benchmarks and the parity tests all go through here, so a RoPE field
or a parameter name is translated in one place only. Our parameter names are HF's minus the
``model.`` prefix and our RoPE uses HF's rotate-half layout, so weights only need renaming.

Each HF architecture is one ``HFArchitecture`` entry; ``architecture(config)`` picks the entry for a
config: ``LlamaForCausalLM``, or ``Qwen3ForCausalLM`` for ``qk_norm`` models (Qwen3 is Llama plus
``q_norm``/``k_norm``, per-head RMSNorm of q and k before RoPE, under exactly our names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from weakwater.model.config import ModelConfig, RopeScaling
from weakwater.model.llama import Transformer


@dataclass(frozen=True)
class HFArchitecture:
    """An HF model class our weights map onto: its ``model_type``, class name in transformers, and
    the config keys only it has, set to the values that make it compute what we compute."""

    model_type: str
    class_name: str
    own_keys: tuple[tuple[str, Any], ...] = ()


LLAMA = HFArchitecture("llama", "LlamaForCausalLM", (("mlp_bias", False), ("pretraining_tp", 1)))
# Qwen3's sliding window would limit attention in some layers; ours attends to the whole context.
QWEN3 = HFArchitecture("qwen3", "Qwen3ForCausalLM", (("use_sliding_window", False), ("sliding_window", None)))
ARCHITECTURES = {a.model_type: a for a in (LLAMA, QWEN3)}


def architecture(config: ModelConfig) -> HFArchitecture:
    """The HF architecture that computes what a model with ``config`` computes."""
    return QWEN3 if config.qk_norm else LLAMA


def rope_dicts(config: ModelConfig) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(transformers 4.x ``rope_scaling``, transformers 5.x ``rope_parameters``) for ``config``.

    Both are written so each transformers version reads its own; YaRN's ``beta_fast``/``beta_slow``
    are always spelled out because a reader that falls back to its defaults computes other angles
    whenever ours differ from them.
    """
    scaling = config.rope_scaling
    if scaling is None:
        return None, {"rope_type": "default", "rope_theta": config.rope_theta}
    legacy: dict[str, Any] = {"rope_type": scaling.kind, "type": scaling.kind, "factor": scaling.factor}
    if scaling.kind == "yarn":
        legacy.update(
            original_max_position_embeddings=scaling.original_max_seq_len,
            beta_fast=scaling.beta_fast,
            beta_slow=scaling.beta_slow,
        )
    params = {k: v for k, v in legacy.items() if k != "type"}
    return legacy, {**params, "rope_theta": config.rope_theta}


def to_hf_config(config: ModelConfig) -> dict[str, Any]:
    """The shape part of an HF ``config.json`` (no token ids or dtype: the exporter adds those).

    HF Llama has attention dropout only, not our embedding/residual dropout, so dropout is not
    carried over: 0 is what inference uses, and training parity holds at dropout 0.
    """
    arch = architecture(config)
    rope_scaling, rope_parameters = rope_dicts(config)
    return {
        "architectures": [arch.class_name],
        "model_type": arch.model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.dim,
        "intermediate_size": config.ffn_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": rope_scaling,
        "rope_parameters": rope_parameters,
        "attention_bias": False,
        "attention_dropout": 0.0,
        **dict(arch.own_keys),
        "tie_word_embeddings": config.tie_embeddings,
        "initializer_range": config.init_std,
    }


def from_hf_config(hf: dict[str, Any]) -> ModelConfig:
    """Our config from an HF ``config.json`` dict (transformers 4.x or 5.x RoPE spelling).

    Refuses what our model cannot compute (another architecture, biases, another activation, a sliding
    window) instead of loading weights that would silently give other logits.
    """
    model_type = hf.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"HF model_type {model_type!r} is not supported (supported: {', '.join(ARCHITECTURES)})")
    checks = (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False), ("use_sliding_window", False))
    for key, expected in checks:
        if hf.get(key, expected) != expected:
            raise ValueError(f"HF config {key}={hf[key]!r} is not supported (needs {expected!r})")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    kind = rope.get("rope_type", rope.get("type", "default"))
    scaling = None
    if kind != "default":
        defaults, factor = RopeScaling(), float(rope["factor"])
        # HF's linear scaling has no original context (its angles do not need one): factor = new / original
        original = rope.get("original_max_position_embeddings") or round(hf["max_position_embeddings"] / factor)
        scaling = RopeScaling(
            kind=kind,
            factor=factor,
            original_max_seq_len=int(original),
            beta_fast=float(rope.get("beta_fast", defaults.beta_fast)),
            beta_slow=float(rope.get("beta_slow", defaults.beta_slow)),
        )
    n_heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // n_heads
    if head_dim * n_heads != hf["hidden_size"]:
        raise ValueError(f"HF head_dim {head_dim} x {n_heads} heads != hidden_size {hf['hidden_size']}")
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        dim=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        ffn_dim=hf["intermediate_size"],
        max_seq_len=hf["max_position_embeddings"],
        rope_theta=float(theta),
        rope_scaling=scaling,
        norm_eps=hf["rms_norm_eps"],
        qk_norm=model_type == QWEN3.model_type,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        init_std=hf.get("initializer_range", 0.02),
    )


def to_hf_state_dict(
    state: dict[str, torch.Tensor], config: ModelConfig, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Our weights under HF names (detached CPU copies); a tied ``lm_head`` is left out because HF
    re-ties it from ``tie_word_embeddings``."""
    out = {}
    for name, tensor in state.items():
        if name == "lm_head.weight" and config.tie_embeddings:
            continue
        key = name if name == "lm_head.weight" else f"model.{name}"
        out[key] = tensor.detach().to("cpu", dtype or tensor.dtype).contiguous()
    return out


def from_hf_state_dict(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """HF weights under our names (``model.`` prefix dropped; a tied ``lm_head`` follows the embedding)."""
    out = {}
    for name, tensor in state.items():
        if name == "lm_head.weight":
            if not config.tie_embeddings:
                out[name] = tensor
        elif name.startswith("model."):
            out[name.removeprefix("model.")] = tensor
        else:
            raise ValueError(f"unexpected HF weight name {name!r}")
    if config.tie_embeddings and "embed_tokens.weight" in out:
        out["lm_head.weight"] = out["embed_tokens.weight"]
    return out


def hf_model(model: Transformer, attn_implementation: str = "sdpa") -> nn.Module:
    """A transformers model of the matching architecture holding a copy of ``model``'s weights
    (fp32, CPU), for parity tests and benchmarks."""
    import transformers

    arch = architecture(model.config)
    config_cls = getattr(transformers, arch.class_name.replace("ForCausalLM", "Config"))
    hf_cfg = config_cls(**{k: v for k, v in to_hf_config(model.config).items() if k not in ("architectures",)})
    hf_cfg._attn_implementation = attn_implementation
    hf = getattr(transformers, arch.class_name)(hf_cfg)
    state = to_hf_state_dict(model.state_dict(), model.config, torch.float32)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise ValueError(f"HF weight mapping failed: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    return hf
