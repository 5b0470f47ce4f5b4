"""An inference-only forward pass over a ``Transformer``'s weights, built for decoding speed.

Decoding one token at a time on a CPU is bound by reading the weights, plus Python overhead per
op. The training forward is shaped for long sequences; here instead the q/k/v and gate/up
weights are concatenated once (so each step reads every weight exactly once, in three matmuls
per layer instead of seven), q and k are rotated together, RoPE cos/sin come from a table built
once, and on a CPU the layer loop is compiled with TorchScript, which runs its ~250 small ops per
token without going through Python (30% of an int8 step for the 26m preset).

QK-norm models (``qk_norm``) normalize the q and k parts of the fused projection per head before
RoPE, with their gains kept as gains in both formats.

Two weight formats:
- ``fp32`` (default): numerically the same computation as ``Transformer.forward`` (the tests
  compare greedy outputs with a naive full recompute and with batched decoding).
- ``int8``: every projection and the LM head as int8 weights (one scale per output channel, the
  RMSNorm gains folded in) with activations quantized on the fly per call (PyTorch's fbgemm
  dynamic int8 kernels, VNNI where the CPU has it). A quarter of the bytes to read per token and
  integer dot products: 3-4x faster than fp32 on a CPU for the 26m preset (5x HF ``generate``),
  for logits about 2% off (relative norm, trained demo models). The activation scale is shared by the rows
  of a batch, so a sequence's output can depend slightly on what it is batched with; use fp32
  where exact, batch-independent outputs matter. CPU only.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from weakwater.model.llama import KVCache, Transformer, apply_rope

WEIGHT_FORMATS = ("fp32", "int8")


def supports_fast_path(model: Transformer) -> bool:
    """Only plain ``nn.Linear`` layers can be fused (LoRA-wrapped ones run their own forward)."""
    return (
        all(
            type(m) is nn.Linear
            for layer in model.layers
            for m in (
                layer.self_attn.q_proj,
                layer.self_attn.k_proj,
                layer.self_attn.v_proj,
                layer.self_attn.o_proj,
                layer.mlp.gate_proj,
                layer.mlp.up_proj,
                layer.mlp.down_proj,
            )
        )
        and type(model.lm_head) is nn.Linear
    )


def int8_supported() -> bool:
    return bool({"fbgemm", "onednn"} & set(torch.backends.quantized.supported_engines))


@functools.cache
def _cpu_has_vnni() -> bool:
    """Whether the CPU has int8 dot-product instructions (AVX512-VNNI or AVX-VNNI); Linux only."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_vnni" in flags or " avx_vnni" in flags


def pack_int8(weight: torch.Tensor) -> torch.classes.quantized.LinearPackedParamsBase:
    """``weight`` as int8 (symmetric, one scale per output channel), packed for the int8 kernels."""
    w = weight.detach().float().cpu()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
    with warnings.catch_warnings():
        # PyTorch flags its quantized tensor type for a future removal; the kernels are current.
        warnings.filterwarnings("ignore", message=".*quantize_per_channel.*deprecated", category=UserWarning)
        qweight = torch.quantize_per_channel(w, scale, torch.zeros(len(w), dtype=torch.long), 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(qweight, None)


def _linear(
    x: torch.Tensor,
    dense: list[torch.Tensor],
    packed: list[torch.classes.quantized.LinearPackedParamsBase],
    j: int,
    reduce_range: bool,
) -> torch.Tensor:
    """``x @ W_j.T`` with fp32 weights, or with int8 ones and activations quantized per call
    (7-bit activations where the CPU lacks VNNI, to avoid int16 overflow in the older kernels)."""
    if len(packed) > 0:
        return torch.ops.quantized.linear_dynamic(x, packed[j], reduce_range)
    return F.linear(x, dense[j])


def _rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """The model's RMSNorm, op for op (fp32 math); without ``weight`` x / rms(x) only, for weights
    that had the gain folded in."""
    if x.dtype == torch.float32:
        return torch.rms_norm(x, [x.size(-1)], weight, eps)
    normed = torch.rms_norm(x.float(), [x.size(-1)], None, eps).to(x.dtype)
    return normed if weight is None else weight * normed


def decode_layers(
    x: torch.Tensor,
    dense: list[torch.Tensor],
    packed: list[torch.classes.quantized.LinearPackedParamsBase],
    norms: list[torch.Tensor | None],
    qk_norms: list[torch.Tensor],
    keys: torch.Tensor,
    values: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: torch.Tensor | None,
    start: int,
    n_heads: int,
    n_kv_heads: int,
    eps: float,
    reduce_range: bool,
) -> torch.Tensor:
    """Embedded tokens (B, T, dim) -> logits, writing this call's keys/values into the cache.

    Per layer i: weights 4i..4i+3 are qkv, o, gate_up, down and norms 2i, 2i+1 the two RMSNorm
    gains; the last weight and norm are the LM head's and the final norm's. ``qk_norms`` is empty,
    or (QK-norm models) holds layer i's q and k gains at 2i, 2i+1, kept as gains even in int8 (the
    norm acts on the projection's output, so there is no weight to fold them into).
    """
    B, T = x.size(0), x.size(1)
    H, Hkv, hd = n_heads, n_kv_heads, keys.size(-1)
    end = start + T
    is_causal = mask is None and T > 1 and start == 0
    n_layers = keys.size(0)
    for i in range(n_layers):
        qkv = _linear(_rms_norm(x, norms[2 * i], eps), dense, packed, 4 * i, reduce_range)
        qkv = qkv.view(B, T, H + 2 * Hkv, hd)
        qk = qkv[:, :, : H + Hkv]
        if len(qk_norms) > 0:
            q = _rms_norm(qk[:, :, :H], qk_norms[2 * i], eps)
            qk = torch.cat((q, _rms_norm(qk[:, :, H:], qk_norms[2 * i + 1], eps)), dim=2)
        qk = apply_rope(qk, cos, sin).transpose(1, 2)
        keys[i, :, :, start:end] = qk[:, H:]
        values[i, :, :, start:end] = qkv[:, :, H + Hkv :].transpose(1, 2)
        out = F.scaled_dot_product_attention(
            qk[:, :H],
            keys[i, :, :, :end],
            values[i, :, :, :end],
            attn_mask=mask,
            is_causal=is_causal,
            enable_gqa=Hkv != H,
        )
        x = x + _linear(out.transpose(1, 2).reshape(B, T, H * hd), dense, packed, 4 * i + 1, reduce_range)
        gate, up = _linear(_rms_norm(x, norms[2 * i + 1], eps), dense, packed, 4 * i + 2, reduce_range).chunk(2, -1)
        x = x + _linear(F.silu(gate) * up, dense, packed, 4 * i + 3, reduce_range)
    return _linear(_rms_norm(x, norms[2 * n_layers], eps), dense, packed, 4 * n_layers, reduce_range)


@functools.cache
def _compiled_decode_layers() -> Callable[..., torch.Tensor]:
    """``decode_layers`` compiled by TorchScript (CPU), or as is where that is unavailable."""
    try:
        with warnings.catch_warnings():
            # TorchScript is in maintenance mode; it is still the one way to run a Python-defined
            # loop of small ops without Python (torch.compile's CPU code was slower here).
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            return torch.jit.script(decode_layers)
    except Exception as e:  # noqa: BLE001 - any failure leaves the (slower) eager loop, which is correct
        warnings.warn(f"TorchScript unavailable ({e}); decoding runs the eager loop", stacklevel=2)
        return decode_layers


class FastDecoder:
    """Callable like ``Transformer.forward`` (keyword arguments), for inference only.

    Holds fused (or quantized) copies of the projection weights, so build it once per loaded
    model and rebuild it if the weights change.
    """

    def __init__(self, model: Transformer, weights: str = "fp32") -> None:
        if not supports_fast_path(model):
            raise ValueError("the fast decoder needs plain nn.Linear layers (merge LoRA adapters first)")
        if weights not in WEIGHT_FORMATS:
            raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, not {weights!r}")
        device = model.embed_tokens.weight.device
        if weights == "int8" and (device.type != "cpu" or not int8_supported()):
            raise ValueError("int8 decoding is a CPU path and needs PyTorch's fbgemm or onednn kernels")
        cfg = model.config
        self.config = cfg
        self.weights = weights
        self.reduce_range = not _cpu_has_vnni()
        with torch.no_grad():
            # (weight, the RMSNorm gain applied to its input, if any), in decode_layers' order.
            linears: list[tuple[torch.Tensor, torch.Tensor | None]] = []
            for b in model.layers:
                a, mlp = b.self_attn, b.mlp
                linears += [
                    (torch.cat((a.q_proj.weight, a.k_proj.weight, a.v_proj.weight)), b.input_layernorm.weight),
                    (a.o_proj.weight, None),
                    (torch.cat((mlp.gate_proj.weight, mlp.up_proj.weight)), b.post_attention_layernorm.weight),
                    (mlp.down_proj.weight, None),
                ]
            linears.append((model.lm_head.weight, model.norm.weight))
            gains = [g.detach() for _, g in linears if g is not None]
            self.dense: list[torch.Tensor] = []
            self.packed: list[torch.classes.quantized.LinearPackedParamsBase] = []
            if weights == "int8":
                # The norm gains are folded into the weights they feed (quantized anyway, so exactness
                # is moot): one multiply fewer per norm.
                self.packed = [pack_int8(w if g is None else w * g[None, :]) for w, g in linears]
                self.norms: list[torch.Tensor | None] = [None] * len(gains)
            else:
                self.dense, self.norms = [w.detach() for w, _ in linears], list(gains)
            self.qk_norms: list[torch.Tensor] = []
            if cfg.qk_norm:
                for b in model.layers:
                    self.qk_norms += [b.self_attn.q_norm.weight.detach(), b.self_attn.k_norm.weight.detach()]
            self.embed = model.embed_tokens.weight.detach()
            # (max_seq_len, 1, head_dim) tables, broadcasting over (B, T, heads, head_dim).
            cos, sin = model.rope(torch.arange(cfg.max_seq_len, device=device)[None], self.embed.dtype)
            self.cos, self.sin = cos[0, 0, :, None], sin[0, 0, :, None]
        # TorchScript is checked on CPU only; elsewhere the same loop runs eagerly.
        self.layers = _compiled_decode_layers() if device.type == "cpu" else decode_layers

    @torch.inference_mode()
    def __call__(
        self,
        input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache,
    ) -> torch.Tensor:
        T = input_ids.shape[1]
        start = kv_cache.length
        end = start + T
        if end > kv_cache.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {kv_cache.max_len}")
        if position_ids is None:
            cos, sin = self.cos[start:end], self.sin[start:end]
        else:
            cos, sin = self.cos[position_ids], self.sin[position_ids]
        mask = Transformer._attention_mask(attention_mask, start, T, input_ids.device)
        cfg = self.config
        logits = self.layers(
            F.embedding(input_ids, self.embed),
            self.dense,
            self.packed,
            self.norms,
            self.qk_norms,
            kv_cache.k,
            kv_cache.v,
            cos,
            sin,
            mask,
            start,
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.norm_eps,
            self.reduce_range,
        )
        kv_cache.length = end
        return logits
