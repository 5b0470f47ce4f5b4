"""``weakwater data synth`` (the built-in bilingual demo data set, no downloads needed) and
``weakwater data convert-chat`` (ShareGPT / Alpaca / CSV to MiniMind conversations)."""

from __future__ import annotations

import argparse
import time

from weakwater.console import say
from weakwater.data.synth import SIZES, generate


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser(
        "data",
        help="built-in demo data; chat format conversion",
        description="`weakwater data synth` writes a deterministic bilingual synthetic world; "
        "`weakwater data convert-chat` converts chat data to MiniMind conversations JSONL.",
    )
    data_sub = data.add_subparsers(dest="data_command", metavar="<subcommand>", required=True)
    synth = data_sub.add_parser(
        "synth",
        help="generate the deterministic bilingual synthetic world (pretrain, SFT, R1, DPO, LoRA and eval files)",
        description="Write pretrain/SFT/R1/DPO/LoRA-domain JSONL files and held-out eval sets of an invented "
        "Chinese+English world into --out, plus world.json (all facts) and manifest.json. Same seed and size "
        "give identical bytes.",
    )
    synth.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    synth.add_argument(
        "--size", choices=list(SIZES), default="demo", help="small (tests), demo (CPU demo, default) or large"
    )
    synth.set_defaults(func=run_synth)
    convert = data_sub.add_parser(
        "convert-chat",
        help="convert ShareGPT / Alpaca / question-answer CSV data to MiniMind conversations JSONL",
        description="Reads JSONL (format auto-detected per line) or a question/answer CSV and writes "
        '{"conversations": [...]} JSONL; malformed records are skipped and counted (or fail with --strict).',
    )
    convert.add_argument("--data", required=True, help="input .jsonl or .csv file")
    convert.add_argument("--out", required=True, help="output .jsonl file")
    convert.add_argument(
        "--format", default="auto", help="auto, messages, sharegpt or alpaca (CSV is detected by suffix)"
    )
    convert.add_argument("--strict", action="store_true", help="stop at the first malformed record")
    convert.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from weakwater.data.chat import convert_file

    n, skipped = convert_file(args.data, args.out, strict=args.strict, fmt=args.format)
    say(f"convert-chat: wrote {n} conversations to {args.out}; {skipped.summary()}")
    return 0


def run_synth(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    manifest = generate(args.out, seed=args.seed, size=args.size)
    elapsed = time.perf_counter() - start
    w = manifest["world"]
    print(
        f"world: {w['people']} people ({w['heldout_people']} held out), {w['cities']} cities, "
        f"{w['companies']} companies, {w['products']} products ({w['heldout_products']} held out), "
        f"{w['creatures']} Ossira creatures"
    )
    for name, info in manifest["files"].items():
        print(f"  {name:<22} {info['rows']:>7,} rows {info['chars']:>11,} chars  {info['purpose']}")
    print(f"wrote {args.out} (seed {args.seed}, size {args.size}) in {elapsed:.1f}s")
    return 0
