"""``weakwater prepare``: tokenise pretraining JSONL into deduplicated binary shards, or (``--chat``) SFT
conversations / DPO pairs into token ids + supervised masks that the chat stages read without tokenising."""

from __future__ import annotations

import argparse

from weakwater.data.prepare import DEFAULT_SHARD_TOKENS, format_summary, prepare


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="tokenise pretraining JSONL into token shards, or chat/DPO data (--chat) for sft/distill/dpo",
        description="Stream JSONL through a pool of tokeniser processes into train_*.bin / val_*.bin shards "
        "(documents separated by EOS) plus meta.json with a stats summary. Memory does not grow with the input. "
        "With --chat sft|dpo: one chat JSONL (any format sft/dpo read) becomes token ids + supervised-token masks "
        "(ids.bin, mask.bin, offsets.npy, meta.json, tokenizer/); pass that directory as --data / --val-data of "
        "sft, distill or dpo and no step tokenises text.",
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
    p.add_argument(
        "--chat",
        choices=("sft", "dpo"),
        default=None,
        help="pre-tokenise one chat JSONL (sft: conversations, for sft/distill; dpo: preference pairs) instead "
        "of pretraining text; the options above about dedup, validation split and shards do not apply",
    )
    p.add_argument("--chat-format", default="auto", help="with --chat sft: the conversation format (as sft's)")
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    if args.chat:
        return run_prepare_chat(args)
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


def run_prepare_chat(args: argparse.Namespace) -> int:
    from weakwater import console
    from weakwater.data.chat_shards import write_chat_shards
    from weakwater.data.dpo import PreferenceDataset
    from weakwater.data.sft import ChatDataset
    from weakwater.tokenizer import load_tokenizer

    if len(args.data) != 1:
        raise SystemExit("prepare --chat takes one --data file (prepare each file into its own --out)")
    tokenizer = load_tokenizer(args.tokenizer)
    big = 1 << 30  # nothing is cut here: the training window applies when a sample is read
    if args.chat == "sft":
        dataset = ChatDataset(args.data[0], tokenizer, big, args.strict, args.chat_format)
    else:
        dataset = PreferenceDataset(args.data[0], tokenizer, big, args.strict)
    bar = console.Progress(len(dataset), f"prepare --chat {args.chat}", "samples")
    try:
        meta = write_chat_shards(
            dataset, args.chat, tokenizer, args.out, args.data[0], progress=lambda done: bar.update(1)
        )
    finally:
        bar.close()
    lengths = meta["sequence_tokens"]
    print(
        f"{meta['samples']} {'conversations' if args.chat == 'sft' else 'pairs'}, {meta['tokens']} tokens "
        f"(per sequence: mean {lengths['mean']}, p95 {lengths['p95']}, max {lengths['max']}); {meta['skipped']}"
    )
    print(f"wrote {args.out}/meta.json")
    return 0
