"""``weakwater bench``: training, decoding and data-pipeline benchmarks that print a table and write JSON."""

from __future__ import annotations

import argparse
import importlib
import json
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from weakwater.bench.common import add_run_arguments, environment, write_json
from weakwater.device import DEVICE_HELP
from weakwater.model.config import PRESETS


def _decode_module() -> ModuleType | None:
    """The decode benchmark lives with the inference engine; the group works without it."""
    try:
        return importlib.import_module("weakwater.bench.decode")
    except ImportError:
        return None


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench",
        help="benchmarks: training/decoding speed vs HF transformers, data pipeline throughput and memory",
        description="Each benchmark prints a table and, with --json FILE, writes its results with the date, "
        "device and commit. Comparisons with HF run in the same process, interleaved, so quote the ratios.",
    )
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="<benchmark>", required=True)

    train = bench_sub.add_parser(
        "train",
        help="training tokens/s of our model vs HF LlamaForCausalLM (same config, weights, run)",
        description="Forward + loss + backward + AdamW steps of our Transformer and of HF LlamaForCausalLM, "
        "interleaved in one process. fp32 on CPU/MPS, bf16 autocast on CUDA (fp16 without bf16). Reports "
        "tokens/s, the ratio to HF, FLOPs/token, MFU on GPUs with a known bf16 peak, and peak memory.",
    )
    _train_arguments(train)
    train.set_defaults(func=run_train)

    for name, text in (
        ("prepare", "`weakwater prepare` on a generated JSONL: wall time, MB/s, tokens/s, peak RSS, busy cores"),
        ("tokenizer", "`weakwater tokenizer train` on a generated JSONL: wall time, MB/s, peak RSS, on N cores"),
    ):
        p = bench_sub.add_parser(name, help=text, description=text + ". The corpus is deleted afterwards.")
        _data_arguments(p, name)
        p.set_defaults(func=run_data, data_benchmarks=(name,))

    decode = _decode_module()
    if decode is not None:
        decode.register(bench_sub)
    importlib.import_module("weakwater.bench.rl").register(bench_sub)

    from weakwater.bench import gpu, sft, speedrun

    sft.register(bench_sub)
    speedrun.register(bench_sub)

    gpu_parser = bench_sub.add_parser(
        "gpu",
        help="every accelerator path end to end (bf16, compile, fused AdamW, SDPA, DDP, loader), MFU, decode, "
        "a short pretraining run; a reduced version on CPU",
        description=gpu.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gpu.add_arguments(gpu_parser)
    gpu_parser.set_defaults(func=gpu.run)

    every = bench_sub.add_parser(
        "all",
        help="every benchmark with small defaults; one table per benchmark and one JSON",
        description="train (few steps), decode (if installed), tokenizer and prepare (on --gb of data).",
    )
    every.add_argument("--preset", choices=sorted(PRESETS), default="26m", help="model preset (default: 26m)")
    every.add_argument("--batch", type=int, default=8, help="train batch size (default: 8)")
    every.add_argument("--seq", type=int, default=512, help="train sequence length (default: 512)")
    every.add_argument("--steps", type=int, default=3, help="timed train steps per variant (default: 3)")
    every.add_argument("--gb", type=float, default=0.1, help="size of the generated corpus in GB (default: 0.1)")
    every.add_argument("--cores", type=int, default=2, help="CPUs for tokenizer training (default: 2)")
    every.add_argument("--device", default="auto", help=DEVICE_HELP)
    every.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    every.add_argument("--json", metavar="FILE", help="write all results as one JSON file")
    every.set_defaults(func=run_all)


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="26m", help="model preset (default: 26m)")
    p.add_argument("--batch", type=int, default=8, help="sequences per step (default: 8)")
    p.add_argument("--seq", type=int, default=512, help="tokens per sequence (default: 512)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant, interleaved (default: 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first (default: 1)")
    p.add_argument(
        "--compile",
        choices=("none", "ours", "both"),
        default="none",
        help="also measure torch.compile'd copies: of ours, or of ours and HF (default: none)",
    )
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of one step of ours")
    add_run_arguments(p, "weights and token ids")


def _data_arguments(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--gb", type=float, default=1.0, help="size of the generated JSONL in GB (default: 1.0)")
    p.add_argument("--vocab-size", type=int, default=6400, help="tokenizer vocabulary (default: 6400)")
    p.add_argument("--tmp-dir", metavar="DIR", help="where to write the temporary corpus (default: system temp)")
    add_run_arguments(p, "the corpus", device=False, threads=False)
    if name == "tokenizer":
        p.add_argument("--cores", type=int, default=2, help="pin tokenizer training to this many CPUs (default: 2)")
        p.add_argument(
            "--max-bytes", type=int, default=None, help="passed to `tokenizer train` (default: its own default)"
        )
    else:
        p.add_argument("--tokenizer", metavar="DIR", help="tokenizer to use (default: train a small one, unmeasured)")
        p.add_argument("--workers", type=int, default=None, help="prepare worker processes (default: all cores)")


def run_train(args: argparse.Namespace) -> int:
    from weakwater.bench.train import profile_step, run_train_bench, train_table

    result = run_train_bench(
        args.preset, args.batch, args.seq, args.steps, args.warmup, args.device, args.compile, args.seed, args.threads
    )
    print(train_table(result))
    if args.profile:
        print(profile_step(args.preset, args.batch, args.seq, args.device, args.seed))
    write_json(result, args.json)
    return 0


def run_data(args: argparse.Namespace) -> int:
    from weakwater.bench.data import data_table, run_data_bench

    result = run_data_bench(
        args.data_benchmarks,
        gb=args.gb,
        seed=args.seed,
        cores=getattr(args, "cores", None),
        max_bytes=getattr(args, "max_bytes", None),
        vocab_size=args.vocab_size,
        tokenizer=getattr(args, "tokenizer", None),
        workers=getattr(args, "workers", None),
        tmp_dir=args.tmp_dir,
    )
    print(data_table(result))
    write_json(result, args.json)
    return 0


def run_all(args: argparse.Namespace) -> int:
    from weakwater.bench.data import data_table, run_data_bench
    from weakwater.bench.train import run_train_bench, train_table

    results: dict[str, Any] = {"benchmark": "all", "environment": environment()}
    results["train"] = run_train_bench(args.preset, args.batch, args.seq, args.steps, 1, args.device, "none", args.seed)
    print(train_table(results["train"]) + "\n")
    decode = _decode_module()
    if decode is not None:
        with tempfile.TemporaryDirectory(prefix="weakwater-bench-") as tmp:
            out = Path(tmp) / "decode.json"
            parser = argparse.ArgumentParser()
            decode.add_arguments(parser)
            dargs = parser.parse_args(
                ["--preset", args.preset, "--batch", "1", "--tokens", "32", "--repeats", "1", "--json", str(out)]
            )
            decode.run(dargs)
            results["decode"] = json.loads(out.read_text(encoding="utf-8"))
        print()
    results["data"] = run_data_bench(("tokenizer", "prepare"), gb=args.gb, seed=args.seed, cores=args.cores)
    print(data_table(results["data"]))
    write_json(results, args.json)
    return 0
