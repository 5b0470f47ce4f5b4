"""``weakwater bench decode``: greedy decode speed of our KV-cache engine vs HF ``generate``.

Both run the same random weights (a preset shape), the same prompts and the same number of new
tokens (no early stop), interleaved in one process so a busy machine slows both alike; the
ratio is the number to trust. Each of ``--repeats`` rounds times ours then HF back to back;
tokens/s are the best round, the speedup is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from weakwater.bench.common import environment, format_table, write_json
from weakwater.infer.generate import Generator
from weakwater.infer.sampling import SamplingParams
from weakwater.model.config import PRESETS, preset
from weakwater.model.llama import Transformer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="26m", help="model shape (default: 26m)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per sequence (default: 128)")
    parser.add_argument("--prompt-len", type=int, default=16, help="prompt tokens per sequence (default: 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of ours then HF (default: 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-hf", action="store_true", help="skip the HF transformers baseline")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one batch-1 run")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and prompts (default: 0)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``decode`` to the ``bench`` command group's subparsers."""
    parser = sub.add_parser(
        "decode",
        help="decode tokens/s of our KV-cache engine vs HF generate (CPU fp32)",
        description=__doc__,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def hf_llama(model: Transformer) -> torch.nn.Module:
    """An HF ``LlamaForCausalLM`` holding exactly our weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from weakwater.export.hf import SpecialIds, hf_config, hf_state_dict

    cfg = hf_config(model.config, SpecialIds(endoftext=0, im_start=None, im_end=None), "float32")
    cfg.pop("architectures")
    cfg.pop("model_type")
    hf = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    missing, unexpected = hf.load_state_dict(hf_state_dict(model, torch.float32), strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise ValueError(f"HF weight mapping failed: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    return hf


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    if args.tokens < 1 or args.prompt_len < 1 or min(args.batch) < 1:
        raise ValueError("--tokens, --prompt-len and --batch must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = preset(args.preset)
    if args.prompt_len + args.tokens > config.max_seq_len:
        raise ValueError(f"--prompt-len + --tokens must fit the context ({config.max_seq_len})")
    model = Transformer(config).eval()
    gen = Generator(model)
    hf = None if args.no_hf else hf_llama(model)
    params = SamplingParams(max_new_tokens=args.tokens)
    rows = []
    for batch in args.batch:
        prompts = torch.randint(0, config.vocab_size, (batch, args.prompt_len))
        ours_out = gen.generate(prompts.tolist(), params)
        row: dict[str, Any] = {"batch": batch, "tokens": args.tokens}

        def ours(p: torch.Tensor = prompts) -> list[list[int]]:
            return gen.generate(p.tolist(), params)

        def hf_generate(p: torch.Tensor = prompts) -> torch.Tensor:
            assert hf is not None
            with torch.inference_mode():
                return hf.generate(
                    p,
                    attention_mask=torch.ones_like(p),
                    do_sample=False,
                    max_new_tokens=args.tokens,
                    min_new_tokens=args.tokens,
                    pad_token_id=0,
                )

        if hf is not None:
            hf_out = hf_generate()[:, args.prompt_len :].tolist()
            row["same_tokens"] = sum(a == b for a, b in zip(ours_out, hf_out)) / batch
        ours_times, hf_times = [], []
        for _ in range(args.repeats):
            ours_times.append(timed(ours))
            if hf is not None:
                hf_times.append(timed(hf_generate))
        row["ours_tok_s"] = batch * args.tokens / min(ours_times)
        if hf_times:
            row["hf_tok_s"] = batch * args.tokens / min(hf_times)
            row["speedup"] = statistics.median(h / o for o, h in zip(ours_times, hf_times))
        rows.append(row)
    columns = [("batch", "batch"), ("tokens", "new tokens"), ("ours_tok_s", "ours tok/s")]
    if hf is not None:
        columns += [
            ("hf_tok_s", "HF generate tok/s"),
            ("speedup", "ours / HF (median)"),
            ("same_tokens", "same output"),
        ]
    print(f"decode, preset {args.preset}, prompt {args.prompt_len} tokens, greedy, CPU fp32")
    print(format_table(rows, columns))
    if args.profile:
        profile(gen, config.vocab_size, args.prompt_len, params)
    write_json({"benchmark": "decode", "preset": args.preset, "results": rows, "environment": environment()}, args.json)
    return 0


def profile(gen: Generator, vocab_size: int, prompt_len: int, params: SamplingParams) -> None:
    """Where a batch-1 decode spends its time, by operator."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    prompt = torch.randint(0, vocab_size, (1, prompt_len)).tolist()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        gen.generate(prompt, params)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
