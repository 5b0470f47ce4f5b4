"""An inference-only forward pass over a ``Transformer``'s weights, built for decoding speed.

Decoding one token at a time on a CPU is bound by reading the weights, plus Python overhead per
op. The training forward is shaped for long sequences; here instead the q/k/v and gate/up
weights are concatenated once (so each step reads every weight exactly once, in three matmuls
per layer instead of seven), q and k are rotated together, and RoPE cos/sin come from a table
built once instead of being recomputed with trig every step.

Two weight formats:
- ``fp32`` (default): numerically the same computation as ``Transformer.forward`` (the tests
  compare greedy outputs with a naive full recompute and with batched decoding).
- ``int8``: every projection and the LM head as int8 weights (one scale per output channel) with
  activations quantized on the fly per call (PyTorch's fbgemm/oneDNN dynamic int8 kernels, VNNI
  where the CPU has it). A quarter of the bytes to read per token and integer dot products: about
  3x faster decoding on a CPU, for logits about 2% off (relative norm, trained demo models). The
  activation scale is shared by the rows of a batch, so a sequence's output can depend slightly
  on what it is batched with; use fp32 where exact, batch-independent outputs matter. CPU only.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from weakwater.model.llama import KVCache, Transformer, apply_rope

WEIGHT_FORMATS = ("fp32", "int8")

TensorFn = Callable[[torch.Tensor], torch.Tensor]


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


def dense_linear(weight: torch.Tensor) -> TensorFn:
    weight = weight.detach()
    return lambda x: F.linear(x, weight)


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


def int8_linear(weight: torch.Tensor) -> TensorFn:
    """``x @ weight.T`` with int8 weights (symmetric, per output channel) and int8 activations
    quantized per call; input and output stay fp32."""
    w = weight.detach().float().cpu()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
    with warnings.catch_warnings():
        # PyTorch flags its quantized tensor type for a future removal; the kernels are current.
        warnings.filterwarnings("ignore", message=".*quantize_per_channel.*deprecated", category=UserWarning)
        qweight = torch.quantize_per_channel(w, scale, torch.zeros(len(w), dtype=torch.long), 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(qweight, None)
    # 7-bit activations avoid int16 overflow in the pre-VNNI kernels; VNNI keeps all 8 bits.
    reduce_range = not _cpu_has_vnni()
    # The C++ builtin behind the op: the Python wrapper scans the arguments for fake script objects on
    # every call (a tracing aid), ~5% of a 26m decode step. Falls back to the public overload.
    overload = torch.ops.quantized.linear_dynamic.default
    op = getattr(overload, "_op", overload)
    return lambda x: op(x, packed, reduce_range)


def _norm(module: nn.Module, with_gain: bool = True) -> TensorFn:
    """An RMSNorm module as a plain function: for fp32 weights the fused op without the module
    call's overhead (the module computes exactly this), otherwise the module itself. Without
    gain, x / rms(x) only: for callers that folded the gain into the next weights."""
    weight = module.weight.detach()
    if with_gain and weight.dtype != torch.float32:
        return module
    gain = weight if with_gain else None
    return functools.partial(F.rms_norm, normalized_shape=(len(weight),), weight=gain, eps=module.eps)


@dataclass
class _Block:
    qkv: TensorFn
    o: TensorFn
    gate_up: TensorFn
    down: TensorFn
    attn_norm: TensorFn
    mlp_norm: TensorFn


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
        self.model = model
        self.weights = weights
        self.H, self.Hkv, self.hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        linear = int8_linear if weights == "int8" else dense_linear
        # int8: the RMSNorm gains are folded into the weights they feed (quantized anyway, so exactness
        # is moot), one multiply fewer per norm; fp32 keeps the model's exact order of operations.
        fold = weights == "int8"

        def normed(norm: nn.Module, weight: torch.Tensor) -> tuple[TensorFn, TensorFn]:
            if fold:
                return _norm(norm, with_gain=False), linear(weight * norm.weight[None, :])
            return _norm(norm), linear(weight)

        with torch.no_grad():
            self.blocks = []
            for b in model.layers:
                a, mlp = b.self_attn, b.mlp
                attn_norm, qkv = normed(
                    b.input_layernorm, torch.cat((a.q_proj.weight, a.k_proj.weight, a.v_proj.weight))
                )
                mlp_norm, gate_up = normed(
                    b.post_attention_layernorm, torch.cat((mlp.gate_proj.weight, mlp.up_proj.weight))
                )
                self.blocks.append(
                    _Block(qkv, linear(a.o_proj.weight), gate_up, linear(mlp.down_proj.weight), attn_norm, mlp_norm)
                )
            self.final_norm, self.head = normed(model.norm, model.lm_head.weight)
            self.embed = model.embed_tokens.weight.detach()
            # (max_seq_len, 1, head_dim) tables, broadcasting over (B, T, heads, head_dim).
            cos, sin = model.rope(torch.arange(cfg.max_seq_len, device=device)[None], model.embed_tokens.weight.dtype)
            self.cos, self.sin = cos[0, 0, :, None], sin[0, 0, :, None]

    @torch.inference_mode()
    def __call__(
        self,
        input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache,
    ) -> torch.Tensor:
        B, T = input_ids.shape
        H, Hkv, hd = self.H, self.Hkv, self.hd
        start = kv_cache.length
        end = start + T
        if end > kv_cache.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {kv_cache.max_len}")
        if position_ids is None:
            cos, sin = self.cos[start:end], self.sin[start:end]
        else:
            cos, sin = self.cos[position_ids], self.sin[position_ids]
        mask = Transformer._attention_mask(attention_mask, start, T, input_ids.device)
        is_causal = mask is None and T > 1 and start == 0
        x = F.embedding(input_ids, self.embed)
        # Per-layer views of the cache, taken once per call (indexing [i, ...] costs a few ops each time).
        for block, keys, values in zip(self.blocks, kv_cache.k.unbind(0), kv_cache.v.unbind(0)):
            qkv = block.qkv(block.attn_norm(x)).view(B, T, H + 2 * Hkv, hd)
            qk = apply_rope(qkv[:, :, : H + Hkv], cos, sin).transpose(1, 2)
            keys[:, :, start:end] = qk[:, H:]
            values[:, :, start:end] = qkv[:, :, H + Hkv :].transpose(1, 2)
            out = F.scaled_dot_product_attention(
                qk[:, :H],
                keys[:, :, :end],
                values[:, :, :end],
                attn_mask=mask,
                is_causal=is_causal,
                enable_gqa=Hkv != H,
            )
            x = x + block.o(out.transpose(1, 2).reshape(B, T, H * hd))
            gate, up = block.gate_up(block.mlp_norm(x)).chunk(2, dim=-1)
            x = x + block.down(F.silu(gate) * up)
        kv_cache.length = end
        return self.head(self.final_norm(x))
