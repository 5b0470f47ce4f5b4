"""``weakwater prepare``: tokenise pretraining JSONL into deduplicated binary shards."""

from __future__ import annotations

import argparse

from weakwater.data.prepare import DEFAULT_SHARD_TOKENS, format_summary, prepare


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="tokenise pretraining JSONL ({'text': ...}) into uint16/uint32 token shards",
        description="Stream JSONL through a pool of tokeniser processes into train_*.bin / val_*.bin shards "
        "(documents separated by EOS) plus meta.json with a stats summary. Memory does not grow with the input.",
    )
    p.add_argument("--data", action="append", required=True, metavar="PATH", help="JSONL file (repeatable)")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer or model directory")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory for shards and meta.json")
    p.add_argument("--val-frac", type=float, default=0.01, help="fraction of documents for validation (default 0.01)")
    p.add_argument("--val-data", action="append", default=[], metavar="PATH", help="validation JSONL (repeatable)")
    p.add_argument("--workers", type=int, default=None, help="tokeniser processes (default: all CPU cores)")
    p.add_argument("--strict", action="store_true", help="stop at the first malformed line instead of skipping it")
    p.add_argument("--dedup", choices=("exact", "minhash", "none"), default="exact", help="duplicate removal")
    p.add_argument("--minhash-threshold", type=float, default=0.8, help="Jaccard threshold for --dedup minhash")
    p.add_argument("--text-field", default="text", help="JSON field holding the document text (default: text)")
    p.add_argument(
        "--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, help="start a new shard file after this many tokens"
    )
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    meta = prepare(
        args.data,
        args.tokenizer,
        args.out,
        val_frac=args.val_frac,
        val_data=args.val_data,
        workers=args.workers,
        strict=args.strict,
        dedup=args.dedup,
        minhash_threshold=args.minhash_threshold,
        text_field=args.text_field,
        shard_tokens=args.shard_tokens,
        verbose=True,
    )
    print(format_summary(meta))
    print(f"wrote {args.out}/meta.json")
    return 0
