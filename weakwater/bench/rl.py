"""``weakwater bench rl``: one GRPO step taken apart: rollout speed of our engine vs HF ``generate`` on the
same weights, the time split rollout / reference / update, and the step's peak memory.

Random weights of a preset shape; ``--prompts`` prompts of ``--prompt-len`` random tokens, ``--group`` samples
each, exactly ``--new-tokens`` new tokens per sample (no early stop), sampled at temperature 1. The step is
what ``weakwater rl`` runs with ``--beta > 0``: rollout (fast engine), reference log-probs (a frozen copy, no
grad), then the update (forward, clipped loss with the k3 KL, backward, AdamW). Peak memory is measured in a
fresh child process that only runs the step: peak RSS on a CPU (every tensor is fp32 there, as in an fp32 GPU
run, plus the interpreter), ``torch.cuda.max_memory_allocated`` on a GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from weakwater.bench.common import add_run_arguments, environment, format_table, peak_rss_mb, write_json
from weakwater.device import pick_device, synchronize
from weakwater.infer.sampling import SamplingParams
from weakwater.model.config import PRESETS, preset
from weakwater.model.llama import Transformer
from weakwater.model.loglik import token_logprobs
from weakwater.rl.grpo import policy_loss
from weakwater.rl.rollout import pack, sample_completions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), nargs="+", default=["26m"], help="shapes (default: 26m)")
    parser.add_argument("--group", type=int, default=8, help="samples per prompt, G (default: 8)")
    parser.add_argument("--prompts", type=int, default=1, help="prompts per step (default: 1)")
    parser.add_argument("--prompt-len", type=int, default=64, help="prompt tokens (default: 64)")
    parser.add_argument("--new-tokens", type=int, default=512, help="new tokens per sample (default: 512)")
    add_run_arguments(parser, "weights and prompts")
    parser.add_argument("--no-hf", action="store_true", help="skip the HF generate baseline")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child process")
    parser.add_argument("--step-only", action="store_true", help=argparse.SUPPRESS)  # the memory child


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "rl",
        help="one RL (GRPO) step: rollout tokens/s vs HF generate, time split, peak memory",
        description=__doc__,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _timed(fn: Any, device: torch.device) -> tuple[float, Any]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def rl_step(
    model: Transformer, reference: Transformer, optimizer: torch.optim.Optimizer, prompts: list[list[int]], args: Any
) -> dict[str, float]:
    """One GRPO step like the rl stage's, each phase timed."""
    device = next(model.parameters()).device
    G, n = args.group, args.new_tokens
    never = model.config.vocab_size  # a stop id no sample can produce: every sample is exactly n tokens
    params = SamplingParams(max_new_tokens=n, temperature=1.0)
    seeds = list(range(len(prompts) * G))
    model.eval()
    t_roll, done = _timed(lambda: sample_completions(model, prompts, seeds, params, never, G), device)
    batch = {k: v.to(device) for k, v in pack(done.prompt_ids, done.completion_ids, pad_id=0).items()}

    def ref() -> torch.Tensor:
        with torch.no_grad():
            return token_logprobs(reference(batch["input_ids"]), batch["labels"])

    t_ref, ref_logp = _timed(ref, device)
    advantages = torch.randn(len(seeds), device=device)

    def update() -> None:
        model.train()
        logp = token_logprobs(model(batch["input_ids"]), batch["labels"])
        out = policy_loss(logp, None, advantages, batch["mask"], ref_logp, beta=0.04)
        (out.loss / out.count).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    t_update, _ = _timed(update, device)
    return {"rollout_s": t_roll, "reference_s": t_ref, "update_s": t_update, "rows": len(seeds), "new_tokens": n}


def build(name: str, args: Any, device: torch.device) -> tuple[Transformer, Transformer, list[list[int]]]:
    torch.manual_seed(args.seed)
    config = preset(name, max_seq_len=max(PRESETS[name]["max_seq_len"], args.prompt_len + args.new_tokens))
    model = Transformer(config).to(device)
    reference = Transformer(config).to(device)
    reference.load_state_dict(model.state_dict())
    reference.eval().requires_grad_(False)
    prompts = torch.randint(7, config.vocab_size, (args.prompts, args.prompt_len)).tolist()
    return model, reference, prompts


def computed_gib(model: Transformer, args: Any) -> dict[str, float]:
    """The step's big tensors for fp32 weights: what does not depend on the framework."""
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    rows, seq = args.prompts * args.group, args.prompt_len + args.new_tokens
    gib = 1024**3
    kv = 2 * cfg.n_layers * rows * seq * cfg.n_kv_heads * cfg.head_dim * 4
    logits = rows * seq * cfg.vocab_size * 4 * 3  # logits, log-softmax, their gradient
    return {
        "weights_grads_adam_gib": params * 16 / gib,
        "reference_gib": params * 4 / gib,
        "kv_cache_gib": kv / gib,
        "logits_gib": logits / gib,
    }


def step_only(args: Any) -> dict[str, Any]:
    """The memory child: build, run one step, report the peak."""
    device = pick_device(args.device)
    name = args.preset[0]
    base_rss = peak_rss_mb()
    model, reference, prompts = build(name, args, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = rl_step(model, reference, optimizer, prompts, args)
    out: dict[str, Any] = {"preset": name, **times, "peak_rss_mib": peak_rss_mb(), "start_rss_mib": base_rss}
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    out.update(computed_gib(model, args))
    return out


def hf_rollout_seconds(model: Transformer, prompts: list[list[int]], args: Any, device: torch.device) -> float:
    """HF ``generate`` sampling the same number of tokens from an HF model holding the same weights."""
    from weakwater.model.hf import hf_model

    hf = hf_model(model).eval().to(device)
    ids = torch.tensor(prompts, device=device)

    def generate() -> None:
        with torch.inference_mode():
            hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_k=0,
                        num_return_sequences=args.group, max_new_tokens=args.new_tokens,
                        min_new_tokens=args.new_tokens, pad_token_id=0)  # fmt: skip

    seconds, _ = _timed(generate, device)
    return seconds


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if min(args.group, args.prompts, args.prompt_len, args.new_tokens) < 1:
        raise ValueError("--group, --prompts, --prompt-len and --new-tokens must be >= 1")
    if args.step_only:
        write_json(step_only(args), args.json)
        return 0
    device = pick_device(args.device)
    rows = []
    for name in args.preset:
        model, reference, prompts = build(name, args, device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
        rl_step(model, reference, optimizer, prompts, argparse.Namespace(**{**vars(args), "new_tokens": 4}))  # warm
        row: dict[str, Any] = {"preset": name, **rl_step(model, reference, optimizer, prompts, args)}
        tokens = row["rows"] * args.new_tokens
        row["ours_tok_s"] = tokens / row["rollout_s"]
        params = SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0)
        seeds = list(range(row["rows"]))
        model.eval()
        never = model.config.vocab_size
        t_plain, _ = _timed(
            partial(sample_completions, model, prompts, seeds, params, never, args.group, fast=False), device
        )
        row["plain_tok_s"] = tokens / t_plain
        if not args.no_hf:
            row["hf_tok_s"] = tokens / hf_rollout_seconds(model, prompts, args, device)
            row["ours_vs_hf"] = row["ours_tok_s"] / row["hf_tok_s"]
        if not args.no_memory:
            with tempfile.TemporaryDirectory(prefix="weakwater-bench-rl-") as tmp:
                out = Path(tmp) / "step.json"
                cmd = [sys.executable, "-m", "weakwater", "bench", "rl", "--step-only", "--preset", name,
                       "--group", str(args.group), "--prompts", str(args.prompts), "--prompt-len", str(args.prompt_len),
                       "--new-tokens", str(args.new_tokens), "--device", args.device, "--seed", str(args.seed),
                       "--threads", str(torch.get_num_threads()), "--json", str(out)]  # fmt: skip
                subprocess.run(cmd, check=True)
                child = json.loads(out.read_text())
            row["peak_rss_gib"] = child["peak_rss_mib"] / 1024
            if "peak_cuda_mib" in child:
                row["peak_cuda_gib"] = child["peak_cuda_mib"] / 1024
            row.update({k: v for k, v in child.items() if k.endswith("_gib") and k not in row})
        rows.append(row)
    columns = [("preset", "preset"), ("rows", "G x prompts"), ("new_tokens", "new tokens"),
               ("ours_tok_s", "rollout tok/s (ours)"), ("plain_tok_s", "ours, no fused copy"),
               ("hf_tok_s", "HF generate tok/s"), ("ours_vs_hf", "ours / HF"), ("rollout_s", "rollout s"),
               ("reference_s", "reference s"), ("update_s", "update s"), ("peak_rss_gib", "peak RSS GiB"),
               ("peak_cuda_gib", "peak CUDA GiB")]  # fmt: skip
    print(f"rl step, random weights, prompt {args.prompt_len} tokens, {device}, {torch.get_num_threads()} threads")
    print(format_table(rows, columns))
    write_json({"benchmark": "rl", "results": rows, "environment": environment(device)}, args.json)
    return 0
