"""``weakwater bench sft``: useful (non-padding) tokens/s of chat training, packed vs right-padded.

Both layouts train the SAME micro-batches (the samples the trainer's loader draws, in its order)
from the same initial weights with their own AdamW, steps interleaved round by round (order
flipping) in one process, so a busy machine slows both alike. A step is the SFT stage's real loss
(assistant-only weighted cross-entropy) + backward + AdamW. Useful tokens are the samples' input
tokens, identical for both layouts, so the ratio of useful tokens/s is the ratio of step times.
The padding share (empty slots / all slots) is counted over every micro-batch of one epoch.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from weakwater.bench.common import add_run_arguments, environment, format_table, write_json
from weakwater.data.loader import BatchLoader
from weakwater.data.packing import model_inputs
from weakwater.data.sft import ChatDataset, SFTCollator
from weakwater.device import autocast, pick_device, pick_dtype, synchronize
from weakwater.model.config import PRESETS, preset
from weakwater.model.llama import Transformer
from weakwater.train.losses import weighted_token_nll


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", required=True, metavar="FILE", help="chat JSONL/CSV files (one result each)")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer directory")
    p.add_argument("--preset", choices=sorted(PRESETS), default="26m", help="model shape (default: 26m)")
    p.add_argument("--seq", type=int, default=512, help="sequence length = packed row length (default: 512)")
    p.add_argument("--batch", type=int, default=16, help="samples per micro-batch (default: 16)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per layout, interleaved (default: 4)")
    add_run_arguments(p, "weights and data order")
    p.add_argument("--dtype", default="auto", help="auto, fp32, bf16 or fp16 (default: auto)")


def epoch_padding(ds: ChatDataset, batch: int, seq: int, seed: int) -> dict[str, float]:
    """Padding share of both layouts over one epoch of micro-batches (collation only, no model)."""
    lengths = [len(ds[i]["ids"]) - 1 for i in range(len(ds))]  # input tokens per sample
    loader = BatchLoader(range(len(ds)), batch, lambda idx: idx, seed=seed)
    out = {"useful": 0, "padded_slots": 0, "packed_slots": 0}
    from weakwater.data.packing import first_fit_decreasing

    for _ in range(loader.batches_per_epoch):
        sizes = [lengths[i] for i in next(loader)]
        out["useful"] += sum(sizes)
        out["padded_slots"] += len(sizes) * max(sizes)
        rows = first_fit_decreasing(sizes, seq)
        out["packed_slots"] += len(rows) * max(sum(sizes[i] for i in r) for r in rows)
    return {
        "padding_share_padded": 1 - out["useful"] / out["padded_slots"],
        "padding_share_packed": 1 - out["useful"] / out["packed_slots"],
        "mean_sample_tokens": sum(lengths) / len(lengths),
        "max_sample_tokens": max(lengths),
    }


def bench_file(path: str, tokenizer: Any, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    ds = ChatDataset(path, tokenizer, args.seq + 1)
    padding = epoch_padding(ds, args.batch, args.seq, args.seed)
    config = preset(args.preset, vocab_size=max(tokenizer.vocab_size, PRESETS[args.preset]["vocab_size"]))
    if config.max_seq_len < args.seq:
        config = preset(args.preset, vocab_size=config.vocab_size, max_seq_len=args.seq)
    torch.manual_seed(args.seed)
    start_weights = Transformer(config).state_dict()
    layouts = {"padded": SFTCollator(tokenizer.eos_id), "packed": SFTCollator(tokenizer.eos_id, pack_len=args.seq)}
    models, optims, times = {}, {}, {name: [] for name in layouts}
    for name in layouts:
        models[name] = Transformer(config)
        models[name].load_state_dict(start_weights)
        models[name].to(device).train()
        optims[name] = torch.optim.AdamW(models[name].parameters(), lr=1e-4, fused=True)
    loader = BatchLoader(ds, args.batch, lambda samples: samples, seed=args.seed)
    useful, slots = 0, {name: 0 for name in layouts}
    for step in range(args.steps + 1):  # step 0 warms both up and is not timed
        samples = next(loader)
        n_useful = sum(len(s["ids"]) - 1 for s in samples)
        order = list(layouts) if step % 2 == 0 else list(layouts)[::-1]
        for name in order:
            batch = {k: v.to(device) for k, v in layouts[name](samples).items()}
            synchronize(device)
            t0 = time.perf_counter()
            with autocast(device, dtype):
                logits = models[name](batch["input_ids"], **model_inputs(batch))
                total, weight = weighted_token_nll(logits, batch["labels"], batch["weights"])
            (total / weight).backward()
            optims[name].step()
            optims[name].zero_grad(set_to_none=True)
            synchronize(device)
            if step:
                times[name].append(time.perf_counter() - t0)
                slots[name] += batch["input_ids"].numel()
        if step:
            useful += n_useful
    result: dict[str, Any] = {"data": str(path), "samples": len(ds), **padding, "truncated": ds.stats}
    for name in layouts:
        result[f"{name}_useful_tok_s"] = useful / sum(times[name])
        result[f"{name}_step_s_median"] = statistics.median(times[name])
        result[f"{name}_measured_padding_share"] = 1 - useful / slots[name]
    result["speedup"] = result["packed_useful_tok_s"] / result["padded_useful_tok_s"]
    result["speedup_median_steps"] = statistics.median(a / b for a, b in zip(times["padded"], times["packed"]))
    return result


def run(args: argparse.Namespace) -> int:
    from weakwater.tokenizer import load_tokenizer

    if args.steps < 1 or args.batch < 1 or args.seq < 4:
        raise ValueError("need --steps >= 1, --batch >= 1 and --seq >= 4")
    for path in args.data:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--data {path}: no such file")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    tokenizer = load_tokenizer(args.tokenizer)
    rows = [bench_file(path, tokenizer, args, device, dtype) for path in args.data]
    print(
        f"sft packing: preset {args.preset}, {args.batch} samples per micro-batch, rows of {args.seq}, "
        f"{args.steps} interleaved steps per layout, {device} {dtype}, {torch.get_num_threads()} threads"
    )
    columns = [
        ("data", "data"),
        ("mean_sample_tokens", "mean tokens"),
        ("padding_share_padded", "padding share (padded)"),
        ("padding_share_packed", "padding share (packed)"),
        ("padded_useful_tok_s", "useful tok/s padded"),
        ("packed_useful_tok_s", "useful tok/s packed"),
        ("speedup", "packed / padded"),
    ]
    print(format_table([{**r, "data": Path(r["data"]).name} for r in rows], columns))
    write_json(
        {
            "benchmark": "sft",
            "args": {k: v for k, v in vars(args).items() if k != "func"},
            "results": rows,
            "environment": environment(device),
        },
        args.json,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sft",
        help="useful tokens/s of chat training (SFT loss), packed vs right-padded, on your chat files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run)
