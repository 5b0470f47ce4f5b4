"""``weakwater tokenizer train|stats``: train a byte-level BPE tokenizer and measure its compression."""

from __future__ import annotations

import argparse
import json
import time

from weakwater.tokenizer.tokenizer import load_tokenizer
from weakwater.tokenizer.train import DEFAULT_MAX_BYTES, tokenizer_stats, train_tokenizer


def register(sub: argparse._SubParsersAction) -> None:
    tok = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer or measure one's compression")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", metavar="<subcommand>", required=True)

    train = tok_sub.add_parser(
        "train",
        help="train byte-level BPE on JSONL text (plain or chat rows)",
        description="Train a byte-level BPE tokenizer. Special tokens <|endoftext|>, <|im_start|>, <|im_end|>, "
        "<think>, </think>, <answer>, </answer> get ids 0..6. Input is a uniform sample of at most --max-bytes "
        "of text, so memory stays bounded on any corpus size.",
    )
    train.add_argument("--data", action="append", required=True, metavar="PATH", help="JSONL file (repeatable)")
    train.add_argument("--out", required=True, metavar="DIR", help="output tokenizer directory")
    train.add_argument("--vocab-size", type=int, default=6400, help="vocabulary size incl. specials (default 6400)")
    train.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help=f"sample at most this many bytes of text (default {DEFAULT_MAX_BYTES}; 0 = all, unbounded memory)",
    )
    train.add_argument(
        "--text-field", default="text", help="JSON field with the text (chat rows and preference pairs are also read)"
    )
    train.add_argument("--heldout-frac", type=float, default=0.0, help="leave out this fraction of lines for stats")
    train.add_argument("--seed", type=int, default=0, help="sampling seed")
    train.set_defaults(func=run_train)

    stats = tok_sub.add_parser("stats", help="chars/token and bytes/token of a tokenizer on JSONL text")
    stats.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer or model directory")
    stats.add_argument("--data", action="append", required=True, metavar="PATH", help="JSONL file (repeatable)")
    stats.add_argument(
        "--text-field", default="text", help="JSON field with the text (chat rows and preference pairs are also read)"
    )
    stats.add_argument(
        "--heldout-frac", type=float, default=0.0, help="measure only the lines `train --heldout-frac` left out"
    )
    stats.add_argument("--max-bytes", type=int, default=0, help="sample at most this many bytes (0 = all)")
    stats.set_defaults(func=run_stats)


def run_train(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    summary = train_tokenizer(
        args.data,
        args.out,
        vocab_size=args.vocab_size,
        max_bytes=args.max_bytes or None,
        text_field=args.text_field,
        seed=args.seed,
        heldout_frac=args.heldout_frac,
    )
    summary["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0


def run_stats(args: argparse.Namespace) -> int:
    stats = tokenizer_stats(
        load_tokenizer(args.tokenizer),
        args.data,
        text_field=args.text_field,
        heldout_frac=args.heldout_frac,
        max_bytes=args.max_bytes or None,
    )
    print(json.dumps(stats, ensure_ascii=False, indent=2))
    return 0
