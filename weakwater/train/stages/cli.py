"""``weakwater sft``, ``distill``, ``dpo``, ``rl``, ``online-dpo`` and ``convert-chat``."""

from __future__ import annotations

import argparse
import sys

from weakwater.train.cli import add_stage_command
from weakwater.train.stages.distill import DistillConfig, DistillStage
from weakwater.train.stages.dpo import DPOConfig, DPOStage
from weakwater.train.stages.online_dpo import OnlineDPOConfig, OnlineDPOStage
from weakwater.train.stages.rl import RLConfig, RLStage
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
        "distillation: trace (SFT on R1-format chats, tags up-weighted), plus logit KD with --teacher DIR",
        DistillConfig,
        DistillStage,
        description="Trace distillation: SFT on R1 answers (<think>...</think><answer>...</answer>) with "
        "--tag-weight on the tag tokens at assistant positions. Logit (white-box) distillation: add --teacher DIR "
        "(same tokenizer) and each token's loss becomes kd_alpha * tau^2 * KL(teacher || student at temperature "
        "--kd-temperature) + (1 - kd_alpha) * CE. " + OUTPUTS,
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
    add_stage_command(
        sub,
        "rl",
        "RL on verifiable rewards: GRPO, Dr. GRPO, DAPO-style options (the policy generates its own batches)",
        RLConfig,
        RLStage,
        description="Samples --group-size replies per prompt with the live weights, scores them with --reward "
        "(math, format, length, repetition or your MODULE:FN), and trains on group-normalised advantages with "
        "the PPO-clipped objective; KL to the --init model with --beta. Prompts: MiniMind {conversations}, "
        "{prompt, answer} or GSM8K JSONL. Held-out greedy accuracy on --val-data every --eval-every steps; "
        "reward.png in --out. " + OUTPUTS,
    )
    add_stage_command(
        sub,
        "online-dpo",
        "online DPO: the policy samples replies, the reward functions pick chosen/rejected",
        OnlineDPOConfig,
        OnlineDPOStage,
        description="Per prompt, --group-size sampled replies are scored with --reward; the best and the worst "
        "form a DPO pair (sigmoid, IPO or SimPO loss; reference = the --init model). " + OUTPUTS,
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
