"""``weakwater doctor``: what this machine offers for training and inference, and the flags to use.

Every answer is probed, not guessed from version numbers: the SDPA backend is the kernel the
profiler sees run for our attention shapes, ``torch.compile`` is tried on a small function,
fused AdamW takes a real step. A probe that fails is reported with its error and never stops the
others, so the command is useful exactly on the machines where something is broken.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from weakwater.device import dtype_name, pick_device, pick_dtype

# CPU flags (from /proc/cpuinfo) that change which kernels PyTorch and fbgemm can use.
CPU_FEATURES = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "avx512_vnni",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)

# aten op names of the fused attention kernels (what SDPA dispatches to).
SDPA_KERNELS = {
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_fused_attention_overrideable": "fused (backend-specific)",
}


def _error(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}"[:300]


def cpu_info() -> dict[str, Any]:
    flags: set[str] = set()
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
    return {
        "model": model,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "features": {f: f in flags for f in CPU_FEATURES} if flags else {},
        "torch_cpu_capability": capability,
        "quantized_engines": [e for e in torch.backends.quantized.supported_engines if e != "none"],
    }


def memory_and_disk(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        out["ram_total_gib"] = int(meminfo["MemTotal"].split()[0]) / 2**20
        out["ram_available_gib"] = int(meminfo["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):
        pass
    usage = shutil.disk_usage(path)
    out["disk_path"] = str(path)
    out["disk_free_gib"] = usage.free / 2**30
    return out


def accelerator_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }
    if torch.cuda.is_available():
        gpus = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            gpus.append(
                {
                    "name": props.name,
                    "capability": f"{props.major}.{props.minor}",
                    "memory_gib": total / 2**30,
                    "free_gib": free / 2**30,
                    "sms": props.multi_processor_count,
                }
            )
        info["gpus"] = gpus
        info["bf16"] = torch.cuda.is_bf16_supported()
        info["fp16"] = True
        info["tf32"] = torch.cuda.get_device_capability(0)[0] >= 8
    elif device.type == "mps":
        info["bf16"] = _try(lambda: torch.ones(2, device=device, dtype=torch.bfloat16).sum().item()) is None
        info["fp16"] = True
    else:
        # CPU bf16 autocast always runs; it is only fast with native bf16 dot products.
        info["bf16"] = (
            _try(lambda: torch.ones(2, 2, dtype=torch.bfloat16) @ torch.ones(2, 2, dtype=torch.bfloat16)) is None
        )
        info["fp16"] = False  # fp16 training needs GradScaler on an accelerator
    return info


def _try(fn: Any) -> str | None:
    """None when ``fn()`` runs, else its error text."""
    try:
        fn()
        return None
    except Exception as e:  # noqa: BLE001 - a probe reports every failure
        return _error(e)


class _OpRecorder(TorchDispatchMode):
    """Names of the aten ops that actually run (after SDPA has picked its kernel)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def sdpa_backend(device: torch.device, dtype: torch.dtype, masked: bool) -> dict[str, Any]:
    """The attention kernel that actually runs for a training-shaped call (causal, GQA; or a bool mask
    such as packing's block-diagonal one), forward and backward.

    The dispatched op names say which of flash / efficient / cudnn / math SDPA chose; "math" is what
    remains when no fused kernel shows up.
    """
    B, H, KV, T, D = 2, 8, 2, 128, 64
    q = torch.randn(B, H, T, D, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(B, KV, T, D, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(B, KV, T, D, device=device, dtype=dtype, requires_grad=True)
    mask = torch.ones(T, T, dtype=torch.bool, device=device).tril()[None, None] if masked else None
    try:
        with _OpRecorder() as rec:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=not masked, enable_gqa=True)
            out.sum().backward()
    except Exception as e:  # noqa: BLE001
        return {"backend": None, "error": _error(e)}
    found = [label for op, label in SDPA_KERNELS.items() if op in rec.names]
    return {"backend": found[0] if found else "math", "ops": sorted(n for n in rec.names if "attention" in n)}


def compile_check(device: torch.device) -> dict[str, Any]:
    """Compile and run a small fused element-wise function (what torch.compile speeds up here)."""
    if device.type == "cpu" and shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("cc") is None:
        return {"works": False, "error": "no C++ compiler on PATH (inductor needs one on CPU)"}

    def f(x: torch.Tensor) -> torch.Tensor:
        return F.silu(x) * x + 1.0

    x = torch.randn(64, 64, device=device)
    start = time.perf_counter()
    try:
        fn = torch.compile(f)
        ok = torch.allclose(fn(x), f(x), atol=1e-5)
    except Exception as e:  # noqa: BLE001
        return {"works": False, "error": _error(e), "seconds": time.perf_counter() - start}
    return {"works": bool(ok), "seconds": time.perf_counter() - start}


def fused_adamw(device: torch.device) -> dict[str, Any]:
    p = torch.nn.Parameter(torch.randn(8, 8, device=device))
    try:
        opt = torch.optim.AdamW([p], lr=1e-3, fused=True)
        p.grad = torch.ones_like(p)
        opt.step()
        return {"works": True}
    except Exception as e:  # noqa: BLE001
        return {"works": False, "error": _error(e)}


def distributed_info() -> dict[str, Any]:
    import torch.distributed as dist

    if not dist.is_available():
        return {"available": False}
    return {"available": True, "nccl": dist.is_nccl_available(), "gloo": dist.is_gloo_available()}


def recommend(report: dict[str, Any]) -> list[str]:
    """Flags for `weakwater pretrain/sft/...` and the environment, from what the probes found."""
    acc, out = report["accelerator"], []
    device = acc["device"]
    if device.startswith("cuda"):
        out.append(f"--dtype {report['sdpa']['dtype']} (what --dtype auto picks on this GPU)")
        n = len(acc.get("gpus", []))
        if n > 1:
            out.append(f"torchrun --nproc_per_node {n} -m weakwater pretrain ... (DDP over NCCL; --fsdp to shard)")
        if report["sdpa"]["causal"]["backend"] not in ("flash", "cudnn"):
            out.append("no flash/cuDNN attention kernel ran: expect slower attention (see `weakwater bench gpu`)")
    elif device == "mps":
        out.append("--device mps")
    else:
        cores = report["cpu"]["usable_cores"]
        out.append(f"OMP_NUM_THREADS={cores} (one thread per usable core; fewer if other jobs share the CPU)")
        if "fbgemm" in report["cpu"]["quantized_engines"]:
            out.append("chat/serve/eval: --weights int8 (fbgemm int8 decoding; docs/benchmarks.md has its speed)")
    if report["compile"].get("works"):
        out.append("--compile (torch.compile works here; its first steps compile, so it pays on longer runs)")
    if report["disk"].get("disk_free_gib", 1e9) < 10:
        out.append(f"only {report['disk']['disk_free_gib']:.1f} GiB free disk: lower --keep-last")
    return out


def run_doctor(skip_compile: bool = False, path: str | Path = ".") -> dict[str, Any]:
    device = pick_device("auto")  # what an ``auto`` run picks: the same rules as every command
    dtype = pick_dtype("auto", device)
    info = accelerator_info(device)
    report: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "accelerator": info,
        "cpu": cpu_info(),
        "sdpa": {
            "dtype": dtype_name(dtype),
            "causal": sdpa_backend(device, dtype, masked=False),
            "masked": sdpa_backend(device, dtype, masked=True),
        },
        "compile": {"skipped": True} if skip_compile else compile_check(device),
        "fused_adamw": fused_adamw(device),
        "distributed": distributed_info(),
        "disk": memory_and_disk(Path(path)),
    }
    report["recommended"] = recommend(report)
    return report


def format_report(r: dict[str, Any]) -> str:
    acc, cpu = r["accelerator"], r["cpu"]

    def yes(v: Any) -> str:
        return "yes" if v else "no"

    def probe(d: dict[str, Any]) -> str:
        if d.get("skipped"):
            return "not checked"
        text = yes(d.get("works"))
        if d.get("seconds") is not None:
            text += f" ({d['seconds']:.1f} s)"
        return text + (f" - {d['error']}" if d.get("error") else "")

    lines = [f"torch {r['torch']}, python {r['python']}", f"device: {acc['device']}"]
    for g in acc.get("gpus", []):
        lines.append(
            f"  GPU {g['name']} (sm {g['capability']}, {g['sms']} SMs): "
            f"{g['free_gib']:.1f} of {g['memory_gib']:.1f} GiB free"
        )
    lines.append(f"bf16: {yes(acc.get('bf16'))}, fp16: {yes(acc.get('fp16'))}")
    for kind in ("causal", "masked"):
        s = r["sdpa"][kind]
        what = s["backend"] or f"failed - {s.get('error')}"
        lines.append(f"SDPA kernel ({kind}, {r['sdpa']['dtype']}): {what}")
    lines.append(f"torch.compile: {probe(r['compile'])}")
    lines.append(f"fused AdamW: {probe(r['fused_adamw'])}")
    d = r["distributed"]
    lines.append(
        f"distributed: NCCL {yes(d.get('nccl'))}, gloo {yes(d.get('gloo'))}" if d["available"] else "distributed: no"
    )
    feats = [f for f, on in cpu["features"].items() if on]
    lines.append(
        f"CPU: {cpu['model']}, {cpu['usable_cores']} usable cores, torch threads {cpu['torch_threads']}, "
        f"kernels {cpu['torch_cpu_capability']}; features: {', '.join(feats) or 'none of ' + ', '.join(CPU_FEATURES)}"
    )
    disk = r["disk"]
    if "ram_total_gib" in disk:
        lines.append(f"RAM: {disk['ram_available_gib']:.1f} of {disk['ram_total_gib']:.1f} GiB available")
    lines.append(f"disk: {disk['disk_free_gib']:.1f} GiB free at {disk['disk_path']}")
    lines.append("recommended:")
    lines += [f"  {x}" for x in r["recommended"]]
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="what this machine offers (device, precisions, attention kernel, compile, ...) and the flags to use",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    p.add_argument("--skip-compile", action="store_true", help="do not try torch.compile (it takes seconds)")
    p.add_argument("--path", default=".", help="where to measure free disk space (default: .)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    report = run_doctor(skip_compile=args.skip_compile, path=args.path)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
