"""Model configuration and the named size presets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class RopeScaling:
    """How RoPE positions are stretched beyond the pretrained context.

    ``kind`` is ``"linear"`` (position interpolation) or ``"yarn"``. ``original_max_seq_len``
    is the context the model was pretrained at; ``factor`` is new_len / original_len.
    """

    kind: str = "linear"
    factor: float = 2.0
    original_max_seq_len: int = 512
    beta_fast: float = 32.0
    beta_slow: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "yarn"):
            raise ValueError(f"rope_scaling.kind must be 'linear' or 'yarn', got {self.kind!r}")
        if self.factor < 1.0:
            raise ValueError(f"rope_scaling.factor must be >= 1, got {self.factor}")


@dataclass
class ModelConfig:
    """Shape of a LLaMA-3-style decoder. Field names mirror the paper/nanoGPT, not HF."""

    vocab_size: int = 6400
    dim: int = 512
    n_layers: int = 8
    n_heads: int = 8
    n_kv_heads: int = 2
    ffn_dim: int | None = None  # None: SwiGLU rule, 2/3 * 4 * dim rounded up to ffn_multiple_of
    ffn_multiple_of: int = 64
    max_seq_len: int = 512
    rope_theta: float = 1e6
    rope_scaling: RopeScaling | None = None
    norm_eps: float = 1e-5
    # QK-norm (Qwen3, MiniMind-3): RMSNorm over each head's q and k before RoPE, so attention logits
    # cannot grow without bound however large q_proj/k_proj weights get.
    qk_norm: bool = False
    dropout: float = 0.0
    tie_embeddings: bool = True
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if isinstance(self.rope_scaling, dict):
            self.rope_scaling = RopeScaling(**self.rope_scaling)
        if self.ffn_dim is None:
            hidden = int(2 * 4 * self.dim / 3)
            self.ffn_dim = self.ffn_multiple_of * math.ceil(hidden / self.ffn_multiple_of)
        self.validate()

    def validate(self) -> None:
        """Reject impossible shapes up front, saying which field to change."""
        problems = []
        if self.dim % self.n_heads:
            problems.append(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        elif (self.dim // self.n_heads) % 2:
            problems.append(f"head_dim = dim / n_heads = {self.dim // self.n_heads} must be even for RoPE")
        if self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads:
            problems.append(f"n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads})")
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "max_seq_len"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)

    def num_params(self, include_embedding: bool = True) -> int:
        """Parameter count computed from the shape (equals ``sum(p.numel())`` of the model)."""
        hd = self.head_dim
        attn = self.dim * hd * (2 * self.n_heads + 2 * self.n_kv_heads)
        mlp = 3 * self.dim * self.ffn_dim
        per_layer = attn + mlp
        embed = self.vocab_size * self.dim
        total = self.n_layers * per_layer + self.norm_params() + (0 if self.tie_embeddings else embed)
        return total + embed if include_embedding else total

    def norm_params(self) -> int:
        """RMSNorm gains: two per layer and the final one, plus the per-head q/k gains with QK-norm."""
        qk = 2 * self.head_dim if self.qk_norm else 0
        return self.n_layers * (2 * self.dim + qk) + self.dim

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token: 6 x matmul params + attention (PaLM appendix B convention)."""
        seq_len = seq_len or self.max_seq_len
        matmul_params = self.num_params(include_embedding=False) - self.norm_params()
        if self.tie_embeddings:
            matmul_params += self.vocab_size * self.dim  # the tied lm_head is still a matmul
        return 6.0 * matmul_params + 12.0 * self.n_layers * self.dim * seq_len


PRESETS: dict[str, dict[str, Any]] = {
    # A CPU demo model: trains to a useful loss on the synthetic corpus in minutes on 2 cores.
    "tiny": dict(dim=192, n_layers=4, n_heads=6, n_kv_heads=2, max_seq_len=256, vocab_size=6400),
    # MiniMind2-small shape: 25.8M parameters with tied embeddings.
    "26m": dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=2, max_seq_len=512, vocab_size=6400),
    # MiniMind2 shape: 104M parameters.
    "104m": dict(dim=768, n_layers=16, n_heads=8, n_kv_heads=2, max_seq_len=512, vocab_size=6400),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A preset's config with some fields replaced (e.g. ``vocab_size`` from the tokenizer)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})
