"""An inference-only forward pass over a ``Transformer``'s weights, built for decoding speed.

Decoding one token at a time on a CPU is bound by reading the weights, plus Python overhead per
op. The training forward is shaped for long sequences; here instead the q/k/v and gate/up
weights are concatenated once (so each step reads every weight exactly once, in three matmuls
per layer instead of seven), and RoPE cos/sin come from a table built once instead of being
recomputed with trig every step. Numerically it is the same computation as
``Transformer.forward`` (the tests compare greedy outputs with a naive full recompute).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from weakwater.model.llama import KVCache, Transformer


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


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """HF rotate-half RoPE: x * cos + cat(-x2, x1) * sin."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class FastDecoder:
    """Callable like ``Transformer.forward`` (keyword arguments), for inference only.

    Holds fused copies of the projection weights, so build it once per loaded model and
    rebuild it if the weights change.
    """

    def __init__(self, model: Transformer) -> None:
        if not supports_fast_path(model):
            raise ValueError("the fast decoder needs plain nn.Linear layers (merge LoRA adapters first)")
        cfg = model.config
        self.config = cfg
        self.model = model
        self.H, self.Hkv, self.hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        with torch.no_grad():
            self.qkv = [
                torch.cat((b.self_attn.q_proj.weight, b.self_attn.k_proj.weight, b.self_attn.v_proj.weight)).detach()
                for b in model.layers
            ]
            self.gate_up = [torch.cat((b.mlp.gate_proj.weight, b.mlp.up_proj.weight)).detach() for b in model.layers]
            positions = torch.arange(cfg.max_seq_len, device=model.inv_freq.device).float()
            angles = positions[:, None] * model.inv_freq
            angles = torch.cat((angles, angles), dim=-1)
            dtype = model.embed_tokens.weight.dtype
            self.cos = (angles.cos() * model.attention_scale).to(dtype)
            self.sin = (angles.sin() * model.attention_scale).to(dtype)

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
            cos, sin = self.cos[start:end][None, None], self.sin[start:end][None, None]
        else:
            cos, sin = self.cos[position_ids][:, None], self.sin[position_ids][:, None]
        mask = Transformer._attention_mask(attention_mask, start, T, input_ids.device)
        is_causal = mask is None and T > 1 and start == 0
        m = self.model
        x = m.embed_tokens(input_ids)
        for i, block in enumerate(m.layers):
            h = block.input_layernorm(x)
            q, k, v = F.linear(h, self.qkv[i]).view(B, T, H + 2 * Hkv, hd).transpose(1, 2).split((H, Hkv, Hkv), dim=1)
            kv_cache.k[i, :, :, start:end] = _rotate(k, cos, sin)
            kv_cache.v[i, :, :, start:end] = v
            out = F.scaled_dot_product_attention(
                _rotate(q, cos, sin),
                kv_cache.k[i, :, :, :end],
                kv_cache.v[i, :, :, :end],
                attn_mask=mask,
                is_causal=is_causal,
                enable_gqa=Hkv != H,
            )
            x = x + block.self_attn.o_proj(out.transpose(1, 2).reshape(B, T, H * hd))
            gate, up = F.linear(block.post_attention_layernorm(x), self.gate_up[i]).chunk(2, dim=-1)
            x = x + block.mlp.down_proj(F.silu(gate) * up)
        kv_cache.length = end
        return m.lm_head(m.norm(x))
