"""``weakwater bench decode``: greedy decode speed of our KV-cache engine vs HF ``generate``.

All engines run the same weights (random ones of a preset shape, or a saved model), the same
prompts and the same number of new tokens (no early stop), interleaved in one process so a busy
machine slows them alike; the ratios are the numbers to trust. Each of ``--repeats`` rounds times
ours (fp32), ours (int8 weights) and HF back to back; tokens/s are the best round, speedups the
median of the per-round ratios. ``int8 = fp32 prefix`` is the mean share of each sequence the
int8 engine generates before it first differs from the fp32 one (random weights give nearly flat
logits, so measure that on a trained model with ``--model``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from weakwater.bench.common import add_run_arguments, environment, format_table, write_json
from weakwater.infer.generate import Generator
from weakwater.infer.sampling import SamplingParams
from weakwater.model.config import PRESETS, preset
from weakwater.model.hf import hf_model
from weakwater.model.io import load_model
from weakwater.model.llama import Transformer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="26m", help="model shape (default: 26m)")
    parser.add_argument("--model", metavar="DIR", help="a saved model directory instead of random preset weights")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per sequence (default: 128)")
    parser.add_argument("--prompt-len", type=int, default=16, help="prompt tokens per sequence (default: 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of ours then HF (default: 3)")
    add_run_arguments(parser, "weights and prompts", device=False)
    parser.add_argument("--no-hf", action="store_true", help="skip the HF transformers baseline")
    parser.add_argument("--no-int8", action="store_true", help="skip our int8-weight engine")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one batch-1 run")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``decode`` to the ``bench`` command group's subparsers."""
    parser = sub.add_parser(
        "decode",
        help="decode tokens/s of our KV-cache engine (fp32 and int8) vs HF generate (CPU)",
        description=__doc__,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Mean share of each sequence that two greedy decodes share before they first differ."""
    shares = []
    for x, y in zip(a, b):
        same = next((i for i, (s, t) in enumerate(zip(x, y)) if s != t), min(len(x), len(y)))
        shares.append(same / max(len(x), 1))
    return sum(shares) / len(shares)


def run(args: argparse.Namespace) -> int:
    if args.tokens < 1 or args.prompt_len < 1 or min(args.batch) < 1:
        raise ValueError("--tokens, --prompt-len and --batch must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.model:
        model = load_model(args.model).eval()
        label = args.model
    else:
        model = Transformer(preset(args.preset)).eval()
        label = f"preset {args.preset}, random weights"
    config = model.config
    if args.prompt_len + args.tokens > config.max_seq_len:
        raise ValueError(f"--prompt-len + --tokens must fit the context ({config.max_seq_len})")
    engines: dict[str, Generator] = {"ours": Generator(model)}
    if not args.no_int8:
        engines["int8"] = Generator(model, weights="int8")
    hf = None if args.no_hf else hf_model(model).eval()
    params = SamplingParams(max_new_tokens=args.tokens)
    rows = []
    for batch in args.batch:
        prompts = torch.randint(7, config.vocab_size, (batch, args.prompt_len))
        runs: dict[str, Callable[[], list[list[int]]]] = {
            name: (lambda g=gen, p=prompts: g.generate(p.tolist(), params)) for name, gen in engines.items()
        }
        if hf is not None:

            def hf_generate(p: torch.Tensor = prompts) -> list[list[int]]:
                assert hf is not None
                with torch.inference_mode():
                    out = hf.generate(
                        p,
                        attention_mask=torch.ones_like(p),
                        do_sample=False,
                        max_new_tokens=args.tokens,
                        min_new_tokens=args.tokens,
                        pad_token_id=0,
                    )
                return out[:, args.prompt_len :].tolist()

            runs["hf"] = hf_generate
        outputs = {name: fn() for name, fn in runs.items()}  # also warms every engine up
        row: dict[str, Any] = {"batch": batch, "tokens": args.tokens}
        if "hf" in outputs:
            row["same_tokens"] = sum(a == b for a, b in zip(outputs["ours"], outputs["hf"])) / batch
        if "int8" in outputs:
            row["int8_agreement"] = _agreement(outputs["int8"], outputs["ours"])
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn))
        for name, ts in times.items():
            row[f"{name}_tok_s"] = batch * args.tokens / min(ts)
        if "hf" in times:
            for name in engines:
                row[f"{name}_speedup"] = statistics.median(h / o for o, h in zip(times[name], times["hf"]))
        rows.append(row)
    columns = [("batch", "batch"), ("tokens", "new tokens"), ("ours_tok_s", "ours fp32 tok/s")]
    if "int8" in engines:
        columns.append(("int8_tok_s", "ours int8 tok/s"))
    if hf is not None:
        columns += [("hf_tok_s", "HF generate tok/s"), ("ours_speedup", "fp32 / HF")]
        if "int8" in engines:
            columns.append(("int8_speedup", "int8 / HF"))
        columns.append(("same_tokens", "fp32 = HF output"))
    if "int8" in engines:
        columns.append(("int8_agreement", "int8 = fp32 prefix"))
    print(f"decode, {label}, prompt {args.prompt_len} tokens, greedy, CPU, {torch.get_num_threads()} threads")
    print(format_table(rows, columns))
    if args.profile:
        profile(engines, config.vocab_size, args.prompt_len, params)
    write_json(
        {"benchmark": "decode", "model": label, "results": rows, "environment": environment()},
        args.json,
    )
    return 0


def profile(engines: dict[str, Generator], vocab_size: int, prompt_len: int, params: SamplingParams) -> None:
    """Where a batch-1 decode spends its time, by operator, for each of our engines."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    prompt = torch.randint(7, vocab_size, (1, prompt_len)).tolist()
    for name, gen in engines.items():
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            gen.generate(prompt, params)
        print(f"profile: {name}, batch 1")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
