"""LoRA adapters (Hu et al. 2021) on the model's linear layers, saved in PEFT's file layout.

``LoRALinear`` subclasses ``nn.Linear`` and keeps the frozen base ``weight`` under its usual
name, so a LoRA-wrapped model's base keys are unchanged (``layers.0.self_attn.q_proj.weight``)
and only ``lora_A``/``lora_B`` are added. Adapters are written exactly as ``peft`` writes them
(``adapter_config.json`` + ``adapter_model.safetensors`` with ``base_model.model.model.<module>.lora_A.weight``
keys), so ``peft.PeftModel.from_pretrained`` loads them on top of the HF export.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from weakwater.model.io import read_json, save_safetensors

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Our parameter names lack HF's ``model.`` prefix; PEFT adds ``base_model.model.`` in front of HF's names.
PEFT_PREFIX = "base_model.model.model."


class LoRALinear(nn.Linear):
    """``W x + (alpha / r) * B A dropout(x)`` with ``W`` frozen; B starts at zero so training starts at the base."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        nn.Module.__init__(self)
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.weight.requires_grad_(False)
        self.bias = base.bias
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.rank, self.alpha = rank, float(alpha)
        self.scale = self.alpha / rank
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_A = nn.Linear(self.in_features, rank, bias=False, device=device, dtype=dtype)
        self.lora_B = nn.Linear(rank, self.out_features, bias=False, device=device, dtype=dtype)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # PEFT's default init
        nn.init.zeros_(self.lora_B.weight)
        self.lora_enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if not self.lora_enabled:
            return out
        return out + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scale

    def delta_weight(self) -> torch.Tensor:
        """The (out, in) update that merging adds to the base weight."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scale

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, rank={self.rank}, alpha={self.alpha:g}"


def lora_modules(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    """(qualified name, module) for every LoRA layer in ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            yield name, module


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def apply_lora(
    model: nn.Module,
    rank: int,
    alpha: float,
    targets: Sequence[str] = DEFAULT_TARGETS,
    dropout: float = 0.0,
) -> nn.Module:
    """Wrap every ``nn.Linear`` whose last name part is in ``targets``; freeze all other parameters.

    Returns ``model`` (changed in place). Raises if no layer matches, so a typo in
    ``--lora-targets`` cannot silently train nothing.
    """
    if any(True for _ in lora_modules(model)):
        raise ValueError("model already has LoRA layers; merge_lora() them first")
    targets = tuple(targets)
    matches = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.rpartition(".")[2] in targets
    ]
    if not matches:
        raise ValueError(f"no linear layer matches LoRA targets {list(targets)}; choose from {list(DEFAULT_TARGETS)}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name, linear in matches:
        _set_submodule(model, name, LoRALinear(linear, rank, alpha, dropout))
    return model


@contextmanager
def lora_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run the base model only (e.g. DPO's reference policy) without keeping a second copy."""
    layers = [m for _, m in lora_modules(model)]
    previous = [m.lora_enabled for m in layers]
    for m in layers:
        m.lora_enabled = False
    try:
        yield model
    finally:
        for m, state in zip(layers, previous):
            m.lora_enabled = state


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold each adapter into its base weight and put plain ``nn.Linear`` layers back.

    The result has no LoRA parameters and every parameter trainable again (as before ``apply_lora``).
    """
    for name, m in list(lora_modules(model)):
        linear = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
        linear.weight = m.weight
        linear.weight += m.delta_weight().to(m.weight.dtype)
        linear.bias = m.bias
        _set_submodule(model, name, linear)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def trainable_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights are counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def trainable_summary(model: nn.Module) -> str:
    """One log line, e.g. ``trainable params: 73,728 / 1,234,567 (5.97%)``."""
    trainable, total = trainable_params(model)
    return f"trainable params: {trainable:,} / {total:,} ({100.0 * trainable / max(total, 1):.2f}%)"


def _adapter_settings(model: nn.Module) -> tuple[dict[str, LoRALinear], LoRALinear]:
    layers = dict(lora_modules(model))
    if not layers:
        raise ValueError("model has no LoRA layers to save")
    first = next(iter(layers.values()))
    for name, m in layers.items():
        if (m.rank, m.alpha) != (first.rank, first.alpha):
            raise ValueError(f"LoRA layer {name} has rank/alpha {m.rank}/{m.alpha}, others {first.rank}/{first.alpha}")
    return layers, first


def save_adapter(model: nn.Module, out_dir: str | Path, base_model_name_or_path: str | None = None) -> Path:
    """Write only the adapters, in PEFT's layout (loadable by ``peft.PeftModel.from_pretrained``)."""
    layers, first = _adapter_settings(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, m in layers.items():
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = m.lora_A.weight.detach().contiguous().cpu()
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = m.lora_B.weight.detach().contiguous().cpu()
    dropout = first.lora_dropout.p if isinstance(first.lora_dropout, nn.Dropout) else 0.0
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": first.rank,
        "lora_alpha": first.alpha,
        "lora_dropout": dropout,
        "target_modules": sorted({name.rpartition(".")[2] for name in layers}),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    save_safetensors(tensors, out_dir / ADAPTER_WEIGHTS)
    (out_dir / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    path = Path(adapter_dir) / ADAPTER_CONFIG
    config = read_json(adapter_dir, ADAPTER_CONFIG, "a LoRA adapter directory")
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{path}: peft_type is {config.get('peft_type')!r}, only 'LORA' is supported")
    for key in ("r", "lora_alpha", "target_modules"):
        if key not in config:
            raise ValueError(f"{path}: missing field {key!r}")
    if config.get("use_dora") or config.get("use_rslora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError(f"{path}: DoRA, rsLoRA and per-layer rank/alpha patterns are not supported")
    return config


def load_adapter(model: nn.Module, adapter_dir: str | Path) -> nn.Module:
    """Add the adapter in ``adapter_dir`` to ``model`` (applying LoRA first if the model has none)."""
    config = read_adapter_config(adapter_dir)
    targets = config["target_modules"]
    if isinstance(targets, str):
        raise ValueError(f"{adapter_dir}/{ADAPTER_CONFIG}: regex target_modules are not supported, give a list")
    if not any(True for _ in lora_modules(model)):
        apply_lora(model, config["r"], config["lora_alpha"], targets, config.get("lora_dropout") or 0.0)
    weights = Path(adapter_dir) / ADAPTER_WEIGHTS
    if not weights.exists():
        raise FileNotFoundError(f"{adapter_dir}: missing {ADAPTER_WEIGHTS}")
    state = load_file(str(weights))
    layers = dict(lora_modules(model))
    expected = {f"{PEFT_PREFIX}{n}.{part}.weight" for n in layers for part in ("lora_A", "lora_B")}
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(
            f"{weights}: adapter does not fit the model (missing {missing[:4]}, unexpected {unexpected[:4]})"
        )
    with torch.no_grad():
        for name, m in layers.items():
            for part in ("lora_A", "lora_B"):
                src = state[f"{PEFT_PREFIX}{name}.{part}.weight"]
                dst = getattr(m, part).weight
                if src.shape != dst.shape:
                    raise ValueError(
                        f"{weights}: {name}.{part} has shape {tuple(src.shape)}, model needs {tuple(dst.shape)}"
                    )
                dst.copy_(src)
    return model
