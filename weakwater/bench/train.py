"""Training throughput of our Transformer vs HF ``LlamaForCausalLM`` with the same config and weights.

Both models run in ONE process and their steps are interleaved round by round (the order flips every
round), so a noisy, shared machine slows both alike; the ratio of medians is what to quote. A step is
forward + cross-entropy + backward + AdamW, with the same optimizer settings for every variant (fused
AdamW where the device supports it). The forward runs under ``--dtype auto``'s autocast (``weakwater.device``):
bf16 on CUDA (fp16 on GPUs without bf16), fp32 on CPU and MPS.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from weakwater.bench.common import environment, format_table, peak_rss_mb, peak_tflops
from weakwater.device import autocast, dtype_name, pick_device, pick_dtype, synchronize
from weakwater.model.config import ModelConfig, preset
from weakwater.model.hf import hf_model
from weakwater.model.llama import Transformer

VARIANTS = ("ours", "hf")


@dataclass
class Variant:
    """One model under test with its own optimizer and its step times."""

    name: str
    model: nn.Module
    loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    times: list[float] = field(default_factory=list)
    first_step_s: float = 0.0
    peak_mem_mb: float | None = None


def ours_loss(model: nn.Module, window: torch.Tensor) -> torch.Tensor:
    """How our trainer computes the pretraining loss: CE of fp32 logits against the next token."""
    logits = model(window[:, :-1])
    return F.cross_entropy(logits.float().flatten(0, 1), window[:, 1:].flatten())


def hf_loss(model: nn.Module, window: torch.Tensor) -> torch.Tensor:
    """HF's own training path: ``labels`` given, HF shifts them and computes the loss itself."""
    return model(input_ids=window[:, :-1], labels=window[:, :-1]).loss


def make_optimizer(model: nn.Module, device: torch.device) -> tuple[torch.optim.Optimizer, str]:
    """Identical AdamW for every variant; the fused kernel when this torch/device has one."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1, fused=True), "fused"
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1), "default"


def train_step(v: Variant, window: torch.Tensor, device: torch.device, dtype: torch.dtype) -> float:
    """One timed optimizer step (the device synchronised so the time covers the work)."""
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with autocast(device, dtype):
        loss = v.loss_fn(v.model, window)
    loss.backward()
    v.optimizer.step()
    v.optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    if device.type == "cuda":
        v.peak_mem_mb = max(v.peak_mem_mb or 0.0, torch.cuda.max_memory_allocated(device) / 2**20)
    elapsed = time.perf_counter() - start
    if not torch.isfinite(loss.detach()):
        raise RuntimeError(f"{v.name}: non-finite loss {loss.item()}")
    return elapsed


def build_variants(
    config: ModelConfig, device: torch.device, compile_mode: str, seed: int
) -> tuple[list[Variant], str]:
    """Ours and HF in eager mode, plus compiled copies when asked (same initial weights everywhere)."""
    torch.manual_seed(seed)
    reference = Transformer(config)
    variants: list[Variant] = []
    opt_kind = "default"
    compiled = {"none": (), "ours": ("ours",), "both": ("ours", "hf")}[compile_mode]
    for name in VARIANTS:
        for is_compiled in (False, True):
            if is_compiled and name not in compiled:
                continue
            if name == "ours":
                model: nn.Module = Transformer(config)
                model.load_state_dict(reference.state_dict())
            else:
                model = hf_model(reference)
            model.to(device).train()
            optimizer, opt_kind = make_optimizer(model, device)
            fn = ours_loss if name == "ours" else hf_loss
            if is_compiled:
                model = torch.compile(model)
            label = f"{name}-{'compiled' if is_compiled else 'eager'}"
            variants.append(Variant(label, model, fn, optimizer))
    return variants, opt_kind


def run_train_bench(
    preset_name: str = "26m",
    batch: int = 8,
    seq: int = 512,
    steps: int = 5,
    warmup: int = 1,
    device: str = "auto",
    compile_mode: str = "none",
    seed: int = 0,
    threads: int = 0,
) -> dict[str, Any]:
    """Measure every variant for ``steps`` interleaved rounds after ``warmup`` untimed ones.

    ``threads`` > 0 sets torch's CPU thread count (on an oversubscribed machine one thread per
    process is less noisy than threads waiting for each other at every parallel region).
    """
    if steps < 1 or warmup < 0 or batch < 1 or seq < 2:
        raise ValueError("need --steps >= 1, --warmup >= 0, --batch >= 1 and --seq >= 2")
    if compile_mode not in ("none", "ours", "both"):
        raise ValueError(f"--compile must be none, ours or both, got {compile_mode!r}")
    dev = pick_device(device)
    dtype = pick_dtype("auto", dev)
    if threads > 0:
        torch.set_num_threads(threads)
    config = preset(preset_name, max_seq_len=max(seq, preset(preset_name).max_seq_len))
    variants, opt_kind = build_variants(config, dev, compile_mode, seed)
    gen = torch.Generator().manual_seed(seed)
    windows = [torch.randint(0, config.vocab_size, (batch, seq + 1), generator=gen).to(dev) for _ in range(4)]
    failures: dict[str, str] = {}
    for v in list(variants):  # the first step includes compilation / allocator warm-up; timed apart
        try:
            v.first_step_s = train_step(v, windows[0], dev, dtype)
        except Exception as e:  # a compiler failure is a result to report, not a crash
            if "compiled" not in v.name:
                raise
            failures[v.name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            variants.remove(v)
            continue
        for i in range(1, warmup):
            train_step(v, windows[i % len(windows)], dev, dtype)
    for r in range(steps):
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            v.times.append(train_step(v, windows[r % len(windows)], dev, dtype))

    tokens = batch * seq
    flops_per_token = config.flops_per_token(seq)
    peak = peak_tflops(torch.cuda.get_device_name(dev)) if dev.type == "cuda" else None
    rows = []
    for v in variants:
        median = statistics.median(v.times)
        tps = tokens / median
        rows.append(
            {
                "variant": v.name,
                "tokens_per_s": tps,
                "step_s_median": median,
                "step_s_min": min(v.times),
                "step_s_all": v.times,
                "first_step_s": v.first_step_s,
                "achieved_tflops": tps * flops_per_token / 1e12,
                "mfu": tps * flops_per_token / (peak * 1e12) if peak else None,
                "peak_gpu_mem_mb": v.peak_mem_mb,
            }
        )
    by_name = {r["variant"]: r for r in rows}
    hf_eager = by_name["hf-eager"]["step_s_median"]
    for row in rows:
        row["speedup_vs_hf_eager"] = hf_eager / row["step_s_median"]
        # Noise on a shared machine only ever adds time, so the fastest steps are a second estimate.
        row["speedup_vs_hf_eager_min"] = by_name["hf-eager"]["step_s_min"] / row["step_s_min"]
    ratios = {"ours_eager_vs_hf_eager": by_name["ours-eager"]["speedup_vs_hf_eager"]}
    if "ours-compiled" in by_name:
        ratios["ours_compiled_vs_hf_eager"] = by_name["ours-compiled"]["speedup_vs_hf_eager"]
    if "hf-compiled" in by_name:
        ratios["ours_compiled_vs_hf_compiled"] = (
            by_name["hf-compiled"]["step_s_median"] / by_name["ours-compiled"]["step_s_median"]
        )
    return {
        "benchmark": "train",
        "preset": preset_name,
        "params": config.num_params(),
        "batch": batch,
        "seq": seq,
        "steps": steps,
        "warmup": warmup,
        "dtype": "fp32" if dtype == torch.float32 else f"{dtype_name(dtype)}-autocast",
        "optimizer": f"AdamW ({opt_kind})",
        "compile": compile_mode,
        "flops_per_token": flops_per_token,
        "device_peak_bf16_tflops": peak,
        "peak_rss_mb": peak_rss_mb(),
        "environment": environment(dev),
        "results": rows,
        "ratios": ratios,
        "failed_variants": failures,
    }


def train_table(result: dict[str, Any]) -> str:
    cols = [
        ("variant", "variant"),
        ("tokens_per_s", "tokens/s"),
        ("step_s_median", "step s (median)"),
        ("first_step_s", "first step s"),
        ("speedup_vs_hf_eager", "x HF eager"),
        ("speedup_vs_hf_eager_min", "x HF eager (min)"),
        ("achieved_tflops", "TFLOP/s"),
        ("mfu", "MFU"),
    ]
    head = (
        f"train: preset {result['preset']} ({result['params'] / 1e6:.1f}M params), batch {result['batch']}x"
        f"{result['seq']}, {result['dtype']}, {result['optimizer']}, {result['steps']} interleaved steps on "
        f"{result['environment']['device']}; peak RSS {result['peak_rss_mb']:.0f} MiB (whole process)"
    )
    lines = [head, format_table(result["results"], cols)]
    lines.append(", ".join(f"{k} = {v:.2f}x" for k, v in result["ratios"].items()))
    lines += [f"{name} failed: {err}" for name, err in result["failed_variants"].items()]
    return "\n".join(lines)


def profile_step(preset_name: str, batch: int, seq: int, device: str = "auto", seed: int = 0) -> str:
    """torch.profiler table (by self time) of one training step of our eager model, after a warm-up step."""
    from torch.profiler import ProfilerActivity, profile

    dev = pick_device(device)
    dtype = pick_dtype("auto", dev)
    config = preset(preset_name, max_seq_len=max(seq, preset(preset_name).max_seq_len))
    torch.manual_seed(seed)
    model = Transformer(config).to(dev).train()
    optimizer, _ = make_optimizer(model, dev)
    variant = Variant("ours-eager", model, ours_loss, optimizer)
    window = torch.randint(0, config.vocab_size, (batch, seq + 1), device=dev)
    train_step(variant, window, dev, dtype)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        train_step(variant, window, dev, dtype)
    sort = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=20)
