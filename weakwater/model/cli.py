"""``weakwater model info``: shape, parameter and FLOP counts of a preset or saved model."""

from __future__ import annotations

import argparse
import json

from weakwater.model.config import PRESETS, preset
from weakwater.model.io import read_model_config


def register(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="inspect model presets and saved models")
    model_sub = model.add_subparsers(dest="model_command", metavar="<subcommand>", required=True)
    info = model_sub.add_parser("info", help="print a model's shape, parameters and FLOPs per token")
    group = info.add_mutually_exclusive_group()
    group.add_argument("--preset", choices=sorted(PRESETS), default="26m", help="a named preset (default: 26m)")
    group.add_argument("--model", metavar="DIR", help="a saved model directory")
    info.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    config = read_model_config(args.model)[0] if args.model else preset(args.preset)
    summary = {
        **config.to_dict(),
        "head_dim": config.head_dim,
        "params": config.num_params(),
        "params_without_embedding": config.num_params(include_embedding=False),
        "train_flops_per_token": config.flops_per_token(),
    }
    print(json.dumps(summary, indent=2))
    return 0
