"""``weakwater bench gpu``: one command that runs every accelerator path end to end and measures it.

Sections, each a check that passes, fails (with its error) or is skipped (budget or not applicable),
so one broken path never hides the others:

- ``paths``: a training step eager in fp32, under bf16 autocast with fused AdamW, and
  ``torch.compile``d; the step times side by side;
- ``sdpa``: which attention kernel runs for our shapes (causal and with a packing mask);
- ``ddp``: one DDP step in a 1-process group (NCCL on CUDA, gloo elsewhere), checked against the
  same step without DDP;
- ``loader``: batches/s of the real data path (token shards -> BatchLoader -> device) vs steps/s;
- ``mfu``: per preset, the batch size with the most tokens/s (doubling until out of memory or no
  gain), then the compiled step at that batch: tokens/s, MFU, peak memory;
- ``decode``: greedy decode tokens/s of our engine vs HF ``generate`` on the device;
- ``pretrain``: a short pretraining run through the real Trainer whose loss must fall.

On a machine without a GPU the same code runs a reduced version (tiny preset, short sequences,
a ~10 s pretraining run), which is what the tests run. The training data is a synthetic token
stream with learnable structure (each token has a few likely successors) unless ``--data`` names
a directory made by ``weakwater prepare``.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weakwater.bench.common import add_run_arguments, environment, peak_rss_mb, peak_tflops, write_json
from weakwater.bench.train import ours_loss
from weakwater.device import autocast, dtype_name, pick_device, pick_dtype, synchronize
from weakwater.model.config import PRESETS, ModelConfig, preset
from weakwater.model.llama import Transformer


@dataclass
class Check:
    name: str
    status: str = "skipped"  # ok / failed / skipped
    seconds: float = 0.0
    summary: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """What to run; :func:`default_plan` picks the full version on an accelerator, else the reduced one."""

    presets: tuple[str, ...]
    seq: int
    batches: tuple[int, ...]  # candidate batch sizes for the MFU search, tried in order
    decode_tokens: int
    pretrain_seconds: float
    budget_s: float
    compile: bool = True


def default_plan(device: torch.device) -> Plan:
    if device.type == "cuda":
        return Plan(("26m", "104m"), 512, (8, 16, 32, 64, 128, 256), 128, 60.0, 480.0)
    return Plan(("tiny",), 64, (2, 4), 16, 10.0, 240.0)


def synthetic_tokens(vocab: int, n: int, seed: int, successors: int = 4, used: int = 256) -> np.ndarray:
    """A Markov chain over ``used`` token ids where each has ``successors`` possible next tokens
    (entropy ln 4 nats): a model learns it in seconds, so the loss of a working training path falls
    from ln(vocab) quickly."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(vocab, size=min(used, vocab), replace=False)
    table = ids[rng.integers(0, len(ids), size=(vocab, successors))]
    choice = rng.integers(0, successors, size=n)
    out = np.empty(n, dtype=np.uint16 if vocab <= 65535 else np.uint32)
    tok = 0
    for i in range(n):
        tok = table[tok, choice[i]]
        out[i] = tok
    return out


def write_token_dir(path: Path, vocab: int, train_tokens: int, seed: int) -> Path:
    """A directory in ``weakwater prepare``'s format holding synthetic train and val shards."""
    path.mkdir(parents=True, exist_ok=True)
    tokens = synthetic_tokens(vocab, train_tokens + train_tokens // 10, seed)
    tokens[:train_tokens].tofile(path / "train_000000.bin")
    tokens[train_tokens:].tofile(path / "val_000000.bin")
    meta = {
        "format": "weakwater-tokens",
        "version": 1,
        "dtype": str(tokens.dtype),
        "vocab_size": vocab,
        "eos_id": 0,
        "splits": {
            "train": {"files": ["train_000000.bin"], "tokens": train_tokens, "docs": 1},
            "val": {"files": ["val_000000.bin"], "tokens": len(tokens) - train_tokens, "docs": 1},
        },
    }
    (path / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


class GpuBench:
    def __init__(self, device: torch.device, dtype: torch.dtype, plan: Plan, seed: int, data: str | None) -> None:
        self.device, self.dtype, self.plan, self.seed = device, dtype, plan, seed
        self.deadline = time.perf_counter() + plan.budget_s
        self.checks: list[Check] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="weakwater-bench-gpu-"))
        self.data = Path(data) if data else None
        self.step_rate: dict[int, float] = {}  # batch -> steps/s of the bf16 + fused path (for the loader check)

    # ---------------------------------------------------------------- helpers
    def run(self, name: str, fn: Callable[[Check], None], min_seconds: float = 5.0) -> Check:
        """Run one section; an exception fails only that section, the budget skips what cannot fit."""
        check = Check(name)
        self.checks.append(check)
        if time.perf_counter() + min_seconds > self.deadline:
            check.summary = "skipped: time budget spent"
            return check
        start = time.perf_counter()
        try:
            fn(check)
            if check.status == "skipped" and not check.summary.startswith("skipped"):
                check.status = "ok"
        except Exception as e:  # noqa: BLE001 - a failed path is a result to report
            check.status = "failed"
            check.summary = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
        check.seconds = time.perf_counter() - start
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return check

    def model(self, name: str) -> Transformer:
        torch.manual_seed(self.seed)
        config = preset(name, max_seq_len=max(self.plan.seq, PRESETS[name]["max_seq_len"]))
        return Transformer(config).to(self.device).train()

    def windows(self, config: ModelConfig, batch: int, n: int = 3) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        return [
            torch.randint(0, config.vocab_size, (batch, self.plan.seq + 1), generator=g).to(self.device)
            for _ in range(n)
        ]

    def timed_steps(
        self,
        model: torch.nn.Module,
        opt: torch.optim.Optimizer,
        windows: list[torch.Tensor],
        dtype: torch.dtype,
        steps: int,
    ) -> tuple[float, float, float]:
        """(first step s, median of the next ``steps`` s, last loss); the first includes compilation."""
        times, loss = [], torch.tensor(0.0)
        for i in range(steps + 1):
            synchronize(self.device)
            start = time.perf_counter()
            with autocast(self.device, dtype):
                loss = ours_loss(model, windows[i % len(windows)])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            synchronize(self.device)
            times.append(time.perf_counter() - start)
        value = float(loss.detach())
        if not np.isfinite(value):
            raise RuntimeError(f"non-finite loss {value}")
        return times[0], statistics.median(times[1:]), value

    def optimizer(self, model: torch.nn.Module, fused: bool) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=fused or None)

    # ---------------------------------------------------------------- sections
    def paths(self, check: Check) -> None:
        name, batch = self.plan.presets[0], self.plan.batches[0]
        variants: list[tuple[str, torch.dtype, bool, bool]] = [("eager fp32, AdamW", torch.float32, False, False)]
        if self.dtype != torch.float32:
            variants.append((f"eager {dtype_name(self.dtype)} autocast, fused AdamW", self.dtype, True, False))
        else:
            variants.append(("eager fp32, fused AdamW", torch.float32, True, False))
        if self.plan.compile:
            variants.append((f"compiled {dtype_name(self.dtype)}, fused AdamW", self.dtype, True, True))
        rows, failures = [], []
        for label, dtype, fused, compiled in variants:
            model = self.model(name)
            windows = self.windows(model.config, batch)
            try:
                opt = self.optimizer(model, fused)
                forward = torch.compile(model) if compiled else model
                first, median, loss = self.timed_steps(forward, opt, windows, dtype, 3)
            except Exception as e:  # noqa: BLE001
                failures.append(f"{label}: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}")
                continue
            rows.append({"path": label, "first_step_s": first, "step_s": median, "loss": loss})
            if fused and not compiled:
                self.step_rate[batch] = 1.0 / median
        base = rows[0]["step_s"] if rows else None
        for r in rows:
            r["speedup_vs_fp32_eager"] = base / r["step_s"] if base else None
        check.data = {"preset": name, "batch": batch, "seq": self.plan.seq, "results": rows}
        check.summary = "; ".join(
            f"{r['path']}: {r['step_s'] * 1e3:.0f} ms/step ({r['speedup_vs_fp32_eager']:.2f}x)" for r in rows
        )
        if failures:
            check.status, check.summary = "failed", "; ".join(failures + [check.summary])

    def sdpa(self, check: Check) -> None:
        from weakwater.doctor import sdpa_backend

        causal = sdpa_backend(self.device, self.dtype, masked=False)
        masked = sdpa_backend(self.device, self.dtype, masked=True)
        check.data = {"causal": causal, "masked": masked}
        check.summary = f"causal: {causal['backend']}, with a packing mask: {masked['backend']}"
        if causal["backend"] is None or masked["backend"] is None:
            check.status = "failed"
        elif self.device.type == "cuda" and causal["backend"] not in ("flash", "cudnn", "efficient"):
            check.status, check.summary = "failed", check.summary + " (no fused kernel on the GPU)"

    def ddp(self, check: Check) -> None:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        backend = "nccl" if self.device.type == "cuda" else "gloo"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if dist.is_initialized():
            raise RuntimeError("a process group is already initialised")
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
        try:
            plain, wrapped_model = self.model(self.plan.presets[0]), self.model(self.plan.presets[0])
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = DistributedDataParallel(wrapped_model, device_ids=ids)
            window = self.windows(plain.config, self.plan.batches[0], 1)[0]
            start = time.perf_counter()
            for m in (plain, wrapped):
                with autocast(self.device, self.dtype):
                    ours_loss(m, window).backward()
            synchronize(self.device)
            diff = max(
                (a.grad.float() - b.grad.float()).abs().max().item()
                for a, b in zip(plain.parameters(), wrapped_model.parameters())
            )
        finally:
            dist.destroy_process_group()
        check.data = {"backend": backend, "max_grad_diff_vs_no_ddp": diff, "seconds": time.perf_counter() - start}
        check.summary = f"{backend}: 1-process DDP step, gradients match the plain step within {diff:.1e}"
        if diff > 1e-2:
            check.status = "failed"

    def token_dir(self, vocab: int) -> Path:
        if self.data is not None:
            return self.data
        path = self.tmp / "tokens"
        if not (path / "meta.json").exists():
            tokens = 4_000_000 if self.device.type == "cuda" else 200_000
            write_token_dir(path, vocab, tokens, self.seed)
        return path

    def loader(self, check: Check) -> None:
        from weakwater.data.loader import BatchLoader
        from weakwater.data.pretrain import PackedWindows, collate_windows

        batch = self.plan.batches[0]
        ds = PackedWindows(self.token_dir(PRESETS[self.plan.presets[0]]["vocab_size"]), "train", self.plan.seq)
        loader = BatchLoader(ds, batch, collate_windows, seed=self.seed)
        pin = self.device.type == "cuda"
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < 2.0:
            b = next(loader)
            for v in b.values():
                (v.pin_memory() if pin else v).to(self.device, non_blocking=pin)
            n += 1
        synchronize(self.device)
        rate = n / (time.perf_counter() - start)
        steps = self.step_rate.get(batch)
        check.data = {"batch": batch, "seq": self.plan.seq, "loader_batches_per_s": rate, "steps_per_s": steps}
        if steps:
            check.data["loader_over_step"] = rate / steps
            check.summary = f"loader {rate:,.0f} batches/s vs {steps:,.1f} steps/s ({rate / steps:,.0f}x headroom)"
            if rate < steps:
                check.status, check.summary = "failed", check.summary + ": the loader limits training"
        else:
            check.summary = f"loader {rate:,.0f} batches/s (no step rate measured)"

    def mfu(self, check: Check, name: str) -> None:
        peak = peak_tflops(torch.cuda.get_device_name(self.device)) if self.device.type == "cuda" else None
        sweep, best = [], None
        for batch in self.plan.batches:
            if time.perf_counter() + 20 > self.deadline:
                break
            model = self.model(name)
            try:
                if self.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(self.device)
                _, median, _ = self.timed_steps(
                    model, self.optimizer(model, True), self.windows(model.config, batch), self.dtype, 2
                )
            except torch.OutOfMemoryError:
                sweep.append({"batch": batch, "oom": True})
                break
            finally:
                del model
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
            tps = batch * self.plan.seq / median
            sweep.append({"batch": batch, "tokens_per_s": tps})
            if best is not None and tps < 1.05 * best["tokens_per_s"]:
                break
            if best is None or tps > best["tokens_per_s"]:
                best = sweep[-1]
        if best is None:
            raise RuntimeError("no batch size fitted")
        batch = best["batch"]
        model = self.model(name)
        config = model.config
        row: dict[str, Any] = {"batch": batch, "eager_tokens_per_s": best["tokens_per_s"]}
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        forward = torch.compile(model) if self.plan.compile else model
        first, median, _ = self.timed_steps(
            forward, self.optimizer(model, True), self.windows(config, batch), self.dtype, 5
        )
        tps = batch * self.plan.seq / median
        flops = config.flops_per_token(self.plan.seq)
        row.update(
            compiled=self.plan.compile,
            first_step_s=first,
            tokens_per_s=tps,
            tflops=tps * flops / 1e12,
            mfu=tps * flops / (peak * 1e12) if peak else None,
            peak_mem_gib=torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None,
        )
        check.data = {"preset": name, "params": config.num_params(), "seq": self.plan.seq, "sweep": sweep, **row}
        mfu = f", MFU {row['mfu']:.1%}" if row["mfu"] is not None else ""
        mem = f", peak {row['peak_mem_gib']:.1f} GiB" if row["peak_mem_gib"] is not None else ""
        kind = "compiled" if self.plan.compile else "eager"
        check.summary = (
            f"best batch {batch}x{self.plan.seq}: {tps:,.0f} tokens/s {kind} ({row['tflops']:.2f} TFLOP/s{mfu}{mem})"
        )

    def decode(self, check: Check) -> None:
        from weakwater.infer.generate import Generator
        from weakwater.infer.sampling import SamplingParams
        from weakwater.model.hf import hf_model

        torch.manual_seed(self.seed)
        model = Transformer(preset(self.plan.presets[0])).eval()
        hf = hf_model(model).eval().to(self.device)
        ours = Generator(model, device=str(self.device))
        tokens = self.plan.decode_tokens
        params = SamplingParams(max_new_tokens=tokens)
        rows = []
        for batch in (1, 8):
            prompts = torch.randint(7, model.config.vocab_size, (batch, 16))

            def run_ours(p: torch.Tensor = prompts) -> None:
                ours.generate(p.tolist(), params)

            def run_hf(p: torch.Tensor = prompts) -> None:
                with torch.inference_mode():
                    hf.generate(
                        p.to(self.device),
                        attention_mask=torch.ones_like(p).to(self.device),
                        do_sample=False,
                        max_new_tokens=tokens,
                        min_new_tokens=tokens,
                        pad_token_id=0,
                    )

            times: dict[str, list[float]] = {"ours": [], "hf": []}
            for i in range(3):  # round 0 warms both up and is not counted
                for name, fn in (("ours", run_ours), ("hf", run_hf)):
                    synchronize(self.device)
                    start = time.perf_counter()
                    fn()
                    synchronize(self.device)
                    if i:
                        times[name].append(time.perf_counter() - start)
            rows.append(
                {
                    "batch": batch,
                    "ours_tok_s": batch * tokens / min(times["ours"]),
                    "hf_tok_s": batch * tokens / min(times["hf"]),
                    "speedup": min(times["hf"]) / min(times["ours"]),
                }
            )
        check.data = {"preset": self.plan.presets[0], "new_tokens": tokens, "results": rows}
        check.summary = "; ".join(
            f"batch {r['batch']}: {r['ours_tok_s']:,.0f} vs HF {r['hf_tok_s']:,.0f} tok/s ({r['speedup']:.2f}x)"
            for r in rows
        )

    def pretrain(self, check: Check) -> None:
        """The real Trainer, sized so its steps take about ``pretrain_seconds``; the loss must fall."""
        from weakwater.train.config import TrainConfig
        from weakwater.train.stages.pretrain import PretrainStage
        from weakwater.train.trainer import Trainer

        name, batch = self.plan.presets[0], self.plan.batches[0]
        mfu = next((c.data for c in self.checks if c.name == f"mfu {name}" and c.status == "ok"), None)
        if mfu:
            batch, step_s = mfu["batch"], mfu["batch"] * self.plan.seq / mfu["tokens_per_s"]
        else:
            step_s = 1.0 / self.step_rate.get(batch, 1.0)
        steps = max(20, int(self.plan.pretrain_seconds / step_s))
        data = self.token_dir(PRESETS[name]["vocab_size"])
        cfg = TrainConfig(
            data=str(data),
            out=str(self.tmp / "pretrain"),
            preset=name,
            max_steps=steps,
            batch_size=batch,
            seq_len=self.plan.seq,
            lr=1e-3,
            warmup_steps=min(50, steps // 10),
            device=str(self.device),
            dtype=dtype_name(self.dtype),
            compile=self.plan.compile and self.device.type == "cuda",
            eval_every=0,
            eval_batches=4,
            save_every=0,
            log_every=max(1, steps // 10),
            plot=False,
            seed=self.seed,
            model={"max_seq_len": max(self.plan.seq, PRESETS[name]["max_seq_len"])},
        )
        start = time.perf_counter()
        trainer = Trainer(cfg, PretrainStage(cfg))
        trainer.fit()
        wall = time.perf_counter() - start
        records = [json.loads(line) for line in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
        losses = [r["loss"] for r in records if "loss" in r]
        val = [r["val_loss"] for r in records if "val_loss" in r]
        check.data = {
            "preset": name,
            "batch": batch,
            "steps": steps,
            "wall_s": wall,
            "tokens": steps * batch * self.plan.seq,
            "first_loss": losses[0],
            "last_loss": losses[-1],
            "val_loss": val[-1] if val else None,
            "synthetic_data": self.data is None,
        }
        check.summary = (
            f"{steps} steps of {batch}x{self.plan.seq} in {wall:.0f} s: loss {losses[0]:.2f} -> {losses[-1]:.2f}"
            + (f", val {val[-1]:.2f}" if val else "")
        )
        if not losses[-1] < losses[0] - 0.5:
            check.status, check.summary = "failed", check.summary + " (did not fall)"

    # ---------------------------------------------------------------- driver
    def run_all(self) -> dict[str, Any]:
        from weakwater.doctor import run_doctor

        doctor = run_doctor(skip_compile=True)
        self.run("paths", self.paths)
        self.run("sdpa", self.sdpa)
        self.run("ddp", self.ddp)
        self.run("loader", self.loader)
        for name in self.plan.presets:
            self.run(f"mfu {name}", lambda c, n=name: self.mfu(c, n), min_seconds=30)
        self.run("decode", self.decode, min_seconds=10)
        self.run("pretrain", self.pretrain, min_seconds=self.plan.pretrain_seconds + 10)
        return {
            "benchmark": "gpu",
            "device": str(self.device),
            "dtype": dtype_name(self.dtype),
            "plan": asdict(self.plan),
            "environment": environment(self.device),
            "doctor": doctor,
            "peak_rss_mb": peak_rss_mb(),
            "checks": [asdict(c) for c in self.checks],
            "passed": all(c.status != "failed" for c in self.checks),
        }


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        f"`weakwater bench gpu` on {env.get('device')} ({result['device']}, {result['dtype']}), torch {env['torch']}, "
        f"commit {env.get('commit')}, {env['date']}",
        "",
        "| check | status | s | result |",
        "|---|---|---|---|",
    ]
    for c in result["checks"]:
        lines.append(f"| {c['name']} | {c['status']} | {c['seconds']:.0f} | {c['summary'].replace('|', '/')} |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p, threads=False)
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA if supported), bf16, fp16 or fp32")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default: 480 GPU, 240 CPU)")
    p.add_argument(
        "--presets", nargs="+", choices=sorted(PRESETS), help="presets for MFU (default: 26m 104m; CPU: tiny)"
    )
    p.add_argument("--seq", type=int, default=None, help="sequence length (default: 512 GPU, 64 CPU)")
    p.add_argument(
        "--pretrain-seconds", type=float, default=None, help="length of the pretraining run (60 GPU, 10 CPU)"
    )
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (it takes a while on CPU)")
    p.add_argument("--data", metavar="DIR", help="token directory from `weakwater prepare` (default: synthetic tokens)")
    p.add_argument("--md", metavar="FILE", help="write the markdown table to FILE")


def run(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    plan = default_plan(device)
    if args.presets:
        plan.presets = tuple(args.presets)
    if args.seq:
        plan.seq = args.seq
    if args.budget:
        plan.budget_s = args.budget
    if args.pretrain_seconds:
        plan.pretrain_seconds = args.pretrain_seconds
    plan.compile = not args.no_compile
    bench = GpuBench(device, dtype, plan, args.seed, args.data)
    try:
        result = bench.run_all()
    finally:
        import shutil

        shutil.rmtree(bench.tmp, ignore_errors=True)
    table = markdown(result)
    print(table)
    write_json(result, args.json)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(table + "\n", encoding="utf-8")
    return 0 if result["passed"] else 1
