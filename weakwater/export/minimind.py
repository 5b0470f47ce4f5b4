"""Import a MiniMind checkpoint (``.pth`` state dict) as a WeakWater model directory.

Three layouts are recognised:

- MiniMind-3 (``model_minimind.py``, 2026): MiniMind2's names plus per-head RMSNorm of q and k
  (``model.layers.0.self_attn.q_norm.weight``), the exact parameter names and math of HF
  ``Qwen3ForCausalLM`` (MiniMind-3's own conversion target): imported with ``qk_norm`` on. Its
  RMSNorm epsilon is 1e-6. MoE checkpoints (``use_moe``: ``mlp.gate`` + ``mlp.experts.N``) are refused.
- MiniMind2 (``model_minimind.py``, 2025): HF-style names under ``model.`` (``model.embed_tokens.weight``,
  ``model.layers.0.self_attn.q_proj.weight``, ``model.layers.0.mlp.gate_proj.weight``, ``lm_head.weight``),
  rotate-half RoPE: a pure rename to ours.
- MiniMind v1 (``model.py``, 2024): Meta-LLaMA names (``tok_embeddings``, ``layers.0.attention.wq``,
  ``feed_forward.w1/w2/w3``, ``output``) with complex-number (interleaved) RoPE, so q/k rows are
  permuted to the rotate-half layout like HF's ``convert_llama_weights_to_hf``.

Checkpoints are read with ``torch.load(weights_only=True)``: plain tensors only, never arbitrary pickles.
The shape (dim, layers, vocab, FFN width, kv heads, tying) is read off the tensors; the head count
too when QK-norm gains give away head_dim (MiniMind-3), else it comes from a flag, as do the RoPE,
context and epsilon settings.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from weakwater.model.config import ModelConfig
from weakwater.model.io import load_model, save_model
from weakwater.model.llama import Transformer

LEGACY_NAMES = {
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w3": "mlp.up_proj",
    "feed_forward.w2": "mlp.down_proj",
}


def interleaved_to_half(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder q/k rows per head from interleaved RoPE pairs (Meta/MiniMind v1) to rotate-half (ours, HF)."""
    rows = weight.shape[0]
    return weight.view(n_heads, rows // n_heads // 2, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a ``.pth`` file (also unwraps ``{"model": state_dict}`` training checkpoints)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError... for anything but plain tensors
        raise ValueError(f"{path}: not a plain tensor state dict ({type(e).__name__}: {e})") from e
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a dict of tensors")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}


# RMSNorm epsilon each layout was trained with (MiniMindConfig's rms_norm_eps default of its time).
LAYOUT_NORM_EPS = {"minimind3": 1e-6, "minimind2": 1e-5, "minimind-v1": 1e-5}


def reject_moe(state: dict[str, torch.Tensor]) -> None:
    """MoE blocks (a router ``mlp.gate`` and ``mlp.experts.N.*``) have no dense equivalent here."""
    experts = {m.group(1) for k in state if (m := re.search(r"\.experts\.(\d+)\.", k))}
    if experts or any(k.endswith(".mlp.gate.weight") for k in state):
        raise ValueError(
            f"MoE is not supported: the checkpoint has a router and {len(experts)} experts per layer "
            "(MiniMind use_moe=True); only dense checkpoints import"
        )


def to_our_names(state: dict[str, torch.Tensor], n_heads: int) -> tuple[dict[str, torch.Tensor], str]:
    """Rename a MiniMind state dict to ours; returns (state, layout name)."""
    reject_moe(state)
    if "model.embed_tokens.weight" in state:
        out = {k.removeprefix("model."): v for k, v in state.items()}
        return out, "minimind3" if "layers.0.self_attn.q_norm.weight" in out else "minimind2"
    if "tok_embeddings.weight" in state:
        out: dict[str, torch.Tensor] = {"embed_tokens.weight": state["tok_embeddings.weight"]}
        dim = state["tok_embeddings.weight"].shape[1]
        head_dim = dim // n_heads
        for key, value in state.items():
            if key == "tok_embeddings.weight":
                continue
            if key == "output.weight":
                out["lm_head.weight"] = value
                continue
            m = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", key)
            if m and m.group(2) in LEGACY_NAMES:
                name = LEGACY_NAMES[m.group(2)]
                if name == "self_attn.q_proj":
                    value = interleaved_to_half(value, n_heads)
                elif name == "self_attn.k_proj":
                    value = interleaved_to_half(value, value.shape[0] // head_dim)
                out[f"layers.{m.group(1)}.{name}.weight"] = value
            else:
                out[key] = value
        return out, "minimind-v1"
    raise ValueError("unrecognised checkpoint: neither 'model.embed_tokens.weight' nor 'tok_embeddings.weight' found")


def infer_config(
    state: dict[str, torch.Tensor], n_heads: int | None, max_seq_len: int, rope_theta: float, norm_eps: float
) -> ModelConfig:
    """Our config from tensor shapes plus the values weights cannot tell (``n_heads`` None: read it
    off the QK-norm gains, whose width is head_dim)."""
    vocab_size, dim = state["embed_tokens.weight"].shape
    n_layers = len({k.split(".")[1] for k in state if k.startswith("layers.")})
    q_rows = state["layers.0.self_attn.q_proj.weight"].shape[0]
    q_norm = state.get("layers.0.self_attn.q_norm.weight")
    if q_norm is not None:
        head_dim = q_norm.shape[0]
        if q_rows != dim or dim % head_dim:
            raise ValueError(
                f"q_proj has {q_rows} rows and head_dim is {head_dim} for dim {dim}: "
                "only head_dim = dim / n_heads is supported"
            )
        if n_heads is not None and n_heads != dim // head_dim:
            raise ValueError(
                f"--n-heads {n_heads} contradicts the checkpoint (q_norm width {head_dim}: {dim // head_dim} heads)"
            )
        n_heads = dim // head_dim
    if n_heads is None:
        raise ValueError("this checkpoint does not tell its head count: pass --n-heads (MiniMind: 8)")
    if dim % n_heads:
        raise ValueError(f"--n-heads {n_heads} does not divide the checkpoint's dim {dim}")
    head_dim = dim // n_heads
    kv_rows = state["layers.0.self_attn.k_proj.weight"].shape[0]
    lm_head = state.get("lm_head.weight")
    tie = lm_head is None or torch.equal(lm_head, state["embed_tokens.weight"])
    return ModelConfig(
        vocab_size=vocab_size,
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=kv_rows // head_dim,
        ffn_dim=state["layers.0.mlp.gate_proj.weight"].shape[0],
        max_seq_len=max_seq_len,
        rope_theta=rope_theta,
        norm_eps=norm_eps,
        qk_norm=q_norm is not None,
        tie_embeddings=tie,
    )


def import_minimind(
    checkpoint: str | Path,
    out_dir: str | Path,
    tokenizer_dir: str | Path,
    n_heads: int | None = None,
    max_seq_len: int = 512,
    rope_theta: float = 1e6,
    norm_eps: float | None = None,
) -> Path:
    """Convert ``checkpoint`` to a saved WeakWater model in ``out_dir`` (fp32), checked by reloading it.

    ``n_heads`` None: from the QK-norm gains (MiniMind-3), else MiniMind's 8; ``norm_eps`` None: the
    epsilon the detected layout was trained with."""
    try:
        state, layout = to_our_names(read_checkpoint(checkpoint), n_heads or 8)
    except ValueError as e:
        raise ValueError(f"{checkpoint}: {e}") from e
    if n_heads is None and layout != "minimind3":
        n_heads = 8
    eps = LAYOUT_NORM_EPS[layout] if norm_eps is None else norm_eps
    try:
        config = infer_config(state, n_heads, max_seq_len, rope_theta, eps)
    except ValueError as e:
        raise ValueError(f"{checkpoint}: {e}") from e
    if config.tie_embeddings:
        state.pop("lm_head.weight", None)
    with torch.device("meta"):
        model = Transformer(config)
    model.to_empty(device="cpu")
    expected = set(model.state_dict()) - ({"lm_head.weight"} if config.tie_embeddings else set())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{checkpoint}: weights do not fit a dense LLaMA (missing {missing}, unexpected {unexpected})")
    for name, value in state.items():
        target = model.get_parameter(name)
        if target.shape != value.shape:
            raise ValueError(f"{checkpoint}: {name} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(value.float())
    if config.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    out = save_model(
        model, out_dir, tokenizer_dir=tokenizer_dir, extra={"imported_from": f"{layout}:{Path(checkpoint).name}"}
    )
    load_model(out)  # fail here, not later, if anything about the written directory is off
    return out
