"""Where and in which precision the code runs: the one device, dtype and autocast choice.

Training, inference, evaluation and the benchmarks all resolve ``--device`` and ``--dtype`` here,
so ``auto`` means the same thing in every command:

- device ``auto``: this rank's CUDA device, else Apple MPS, else CPU. ``cuda`` without an index is
  this rank's GPU (``LOCAL_RANK`` under torchrun), so one command line works on every rank.
- dtype ``auto``: bf16 on CUDA when the GPU supports it, else fp16 (which training pairs with a
  GradScaler); fp32 on CPU and MPS, where mixed precision is slower or unsupported. An explicit
  ``fp16`` also runs on CPU (torch has a CPU GradScaler): slow, but the same code path as on a GPU.
- Mixed precision is autocast over fp32 weights (the weights and optimizer state stay fp32);
  fp32 runs get no autocast context at all.
"""

from __future__ import annotations

import contextlib

import torch

DEVICE_HELP = "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps"
DTYPES = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def valid_device_name(name: str) -> bool:
    """Whether ``name`` is a ``--device`` value at all (checked without touching any device)."""
    kind, _, index = name.partition(":")
    if name in ("auto", "cpu", "mps", "cuda"):
        return True
    return kind == "cuda" and index.isdigit()


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The ``torch.device`` for a ``--device`` value; asking for a missing accelerator is an error."""
    if not valid_device_name(name):
        raise ValueError(f"--device must be {DEVICE_HELP}, got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        return torch.device("mps") if mps_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    if device.type == "mps" and not mps_available():
        raise ValueError(f"--device {name}: Apple MPS is not available on this machine; use --device cpu")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype for a ``--dtype`` value (``auto``, ``fp32``, ``bf16``, ``fp16``) on ``device``."""
    if name not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bf16"`` (the ``--dtype`` spelling)."""
    return next(k for k, v in DTYPES.items() if v == dtype)


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``; a no-op context for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (timings of asynchronous devices need it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
