"""``weakwater sft``, ``weakwater distill``, ``weakwater dpo`` and ``weakwater convert-chat``."""

from __future__ import annotations

import argparse
import sys

from weakwater.train.cli import add_stage_command
from weakwater.train.stages.distill import DistillConfig, DistillStage
from weakwater.train.stages.dpo import DPOConfig, DPOStage
from weakwater.train.stages.sft import SFTConfig, SFTStage

OUTPUTS = (
    "Outputs in --out: config.json, metrics.jsonl, checkpoints/, best/, final/ (the model), loss.png; "
    "with --lora-rank also adapter/ (PEFT layout) while final/ holds the merged model."
)


def _convert(args: argparse.Namespace) -> int:
    from weakwater.data.chat import convert_file

    n, skipped = convert_file(args.data, args.out, strict=args.strict, fmt=args.format)
    print(f"convert-chat: wrote {n} conversations to {args.out}; {skipped.summary()}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    add_stage_command(
        sub,
        "sft",
        "supervised fine-tuning on chat JSONL (loss on assistant tokens only)",
        SFTConfig,
        SFTStage,
        description="SFT on MiniMind {conversations: [...]} JSONL (also ShareGPT, Alpaca, question/answer CSV). "
        "Loss on assistant tokens incl. the closing <|im_end|>. Long context: --max-seq-len N --rope-scaling "
        "linear|yarn from a shorter --init model. " + OUTPUTS,
    )
    add_stage_command(
        sub,
        "distill",
        "reasoning distillation on R1-format chats (<think>/<answer> tags up-weighted)",
        DistillConfig,
        DistillStage,
        description="SFT on R1 answers (<think>...</think><answer>...</answer>) with --tag-weight on the tag "
        "tokens at assistant positions. " + OUTPUTS,
    )
    add_stage_command(
        sub,
        "dpo",
        "preference optimisation on chosen/rejected pairs (DPO, IPO, SimPO)",
        DPOConfig,
        DPOStage,
        description="DPO/IPO/SimPO on {chosen: [...], rejected: [...]} JSONL; the reference is --init "
        "(adapters disabled under LoRA; --precompute-ref stores its log-probs once). " + OUTPUTS,
    )
    p = sub.add_parser(
        "convert-chat",
        help="convert ShareGPT / Alpaca / question-answer CSV data to MiniMind conversations JSONL",
        description="Reads JSONL (format auto-detected per line) or a question/answer CSV and writes "
        '{"conversations": [...]} JSONL; malformed records are skipped and counted (or fail with --strict).',
    )
    p.add_argument("--data", required=True, help="input .jsonl or .csv file")
    p.add_argument("--out", required=True, help="output .jsonl file")
    p.add_argument("--format", default="auto", help="auto, messages, sharegpt or alpaca (CSV is detected by suffix)")
    p.add_argument("--strict", action="store_true", help="stop at the first malformed record")
    p.set_defaults(func=_convert)
