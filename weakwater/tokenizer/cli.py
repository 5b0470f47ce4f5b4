"""``weakwater tokenizer train|stats``: train a byte-level BPE tokenizer on JSONL text and measure its compression
(this command joins the data reader, :mod:`weakwater.data.text`, to the tokenizer trainer)."""

from __future__ import annotations

import argparse
import json
import time

from weakwater.data.text import iter_texts
from weakwater.jsonl import SkipCounter
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
    skipped = SkipCounter()
    texts = iter_texts(
        args.data, args.text_field, args.max_bytes or None, args.seed, args.heldout_frac, skipped=skipped
    )
    summary = train_tokenizer(texts, args.out, vocab_size=args.vocab_size, skipped=skipped)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0


def run_stats(args: argparse.Namespace) -> int:
    tokenizer = load_tokenizer(args.tokenizer)
    texts = iter_texts(
        args.data,
        args.text_field,
        args.max_bytes or None,
        heldout_frac=args.heldout_frac,
        heldout=args.heldout_frac > 0,
    )
    stats = tokenizer_stats(tokenizer, texts)
    print(json.dumps(stats, ensure_ascii=False, indent=2))
    return 0
