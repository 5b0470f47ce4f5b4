"""A LLaMA-3-style decoder written from scratch: RMSNorm, RoPE, grouped-query attention, SwiGLU.

Parameter names and layouts follow HF ``LlamaForCausalLM`` (minus its ``model.`` prefix), so
export is a rename and LoRA target names (q_proj, ..., down_proj) are the ones PEFT uses.
RoPE uses the "rotate half" layout for the same reason. With ``qk_norm`` the attention gains
Qwen3's ``q_norm``/``k_norm`` (as HF ``Qwen3ForCausalLM`` and MiniMind-3 name them).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from weakwater.model.config import ModelConfig, RopeScaling


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 like HF so bf16 runs match it."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)  # same math, one op fewer
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.type_as(x)


def rope_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies per rotary pair and the attention scale for cos/sin.

    Linear scaling divides every frequency by ``factor``. YaRN interpolates only the
    low-frequency pairs (those rotating less than ``beta_slow`` times over the original
    context), keeps the high-frequency ones, ramps in between, and scales attention by
    0.1 ln(factor) + 1 (YaRN paper, eq. 17-22; identical to HF's implementation).
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    if scaling is None:
        return inv_freq, 1.0
    if scaling.kind == "linear":
        return inv_freq / scaling.factor, 1.0

    def dim_for_rotations(rotations: float) -> float:
        return head_dim * math.log(scaling.original_max_seq_len / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(dim_for_rotations(scaling.beta_fast)), 0)
    high = min(math.ceil(dim_for_rotations(scaling.beta_slow)), head_dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # 1: keep original frequency (extrapolate), 0: interpolate
    inv_freq = inv_freq / scaling.factor * (1 - keep) + inv_freq * keep
    attention_scale = 0.1 * math.log(scaling.factor) + 1.0 if scaling.factor > 1 else 1.0
    return inv_freq, attention_scale


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, hd) by per-position angles; cos/signed_sin are (B or 1, 1, T, hd).

    HF's ``x * cos + rotate_half(x) * sin`` with rotate_half(x) = cat(-x2, x1), written as
    ``x * cos + roll(x) * cat(-sin1, sin2)``: bitwise the same, two fewer full passes over x
    (no negation, and the multiply-add fused in addcmul).
    """
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin)


class KVCache:
    """Preallocated keys/values for all layers, filled left to right during decoding.

    ``length`` is how many positions are filled; the model advances it after each forward.
    """

    def __init__(
        self, config: ModelConfig, batch_size: int, max_len: int, device: torch.device | str, dtype: torch.dtype
    ) -> None:
        shape = (config.n_layers, batch_size, config.n_kv_heads, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's k/v at the current offset and return the filled prefix."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {self.max_len}")
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def reset(self) -> None:
        self.length = 0


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.dropout = config.dropout
        self.q_proj = nn.Linear(config.dim, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, config.dim, bias=False)
        # QK-norm: one head_dim-wide gain shared by all heads of q (and one by all of k), as in Qwen3.
        self.q_norm = RMSNorm(self.head_dim, config.norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, config.norm_eps) if config.qk_norm else None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        kv_cache: KVCache | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            # Before RoPE, as Qwen3 and MiniMind-3 do, so their gains mean the same here; the cache
            # then holds normalized keys and cached positions cost nothing extra per decoding step.
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.store(self.layer_idx, k, v)
        # A mask is only needed for padding or for a multi-token chunk after a cached prefix;
        # the plain causal case takes SDPA's fast is_causal path.
        is_causal = mask is None and T > 1 and k.shape[2] == T
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.dim, config.ffn_dim, bias=False)
        self.up_proj = nn.Linear(config.dim, config.ffn_dim, bias=False)
        self.down_proj = nn.Linear(config.ffn_dim, config.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = MLP(config)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, mask, kv_cache):  # type: ignore[no-untyped-def]
        x = x + self.resid_dropout(self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache))
        return x + self.resid_dropout(self.mlp(self.post_attention_layernorm(x)))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.dim)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        inv_freq, self.attention_scale = rope_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, init_std) everywhere; residual output projections scaled by 1/sqrt(2 n_layers)
        (GPT-2) so the residual stream's variance does not grow with depth."""
        std = self.config.init_std
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):  # every RMSNorm gain, incl. q_norm/k_norm
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.config.n_layers))
            else:
                nn.init.normal_(p, 0.0, std)

    def rope(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin (see ``apply_rope``) for (B, T) positions, shaped (B, 1, T, head_dim)."""
        angles = (position_ids[..., None].float() * self.inv_freq)[:, None]
        cos, sin = angles.cos() * self.attention_scale, angles.sin() * self.attention_scale
        return torch.cat((cos, cos), dim=-1).to(dtype), torch.cat((-sin, sin), dim=-1).to(dtype)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, vocab) for token ids (B, T).

        ``attention_mask`` (B, S) marks real tokens (1) vs padding (0) over every position the
        cache will hold after this call (cached prefix + these T tokens), as in HF. With a
        ``kv_cache``, new keys/values are appended and ``kv_cache.length`` advances by T.
        """
        B, T = input_ids.shape
        start = kv_cache.length if kv_cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(start, start + T, device=input_ids.device).expand(B, T)
        x = self.dropout(self.embed_tokens(input_ids))
        cos, sin = self.rope(position_ids, x.dtype)
        mask = self._attention_mask(attention_mask, start, T, input_ids.device)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, kv_cache)
        if kv_cache is not None:
            kv_cache.length += T
        return self.lm_head(self.norm(x))

    @staticmethod
    def _attention_mask(
        attention_mask: torch.Tensor | None, start: int, T: int, device: torch.device
    ) -> torch.Tensor | None:
        """Boolean (B, 1, T, S) mask, or None when plain causal attention suffices."""
        if attention_mask is None and (start == 0 or T == 1):
            return None
        S = start + T
        query_pos = torch.arange(start, S, device=device)[:, None]
        mask = (torch.arange(S, device=device)[None, :] <= query_pos)[None, None]
        if attention_mask is not None:
            mask = mask & attention_mask[:, None, None, :S].bool()
            # A padding query would otherwise see no key at all and produce NaNs that leak into
            # later layers through its cached values; letting it see itself keeps it finite.
            mask = mask | (torch.arange(S, device=device)[None, :] == query_pos)[None, None]
        return mask

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
