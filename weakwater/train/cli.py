"""``weakwater pretrain`` and the helper every training stage uses to get its command.

``add_stage_command(sub, "sft", "...", SFTConfig, make_stage)`` gives a stage one flag per config
field (plus ``--config FILE`` and ``--model-arg KEY=VALUE``), resolves the config, builds the stage
and runs the one :class:`~weakwater.train.trainer.Trainer`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from weakwater import console
from weakwater.config import add_arguments, resolve
from weakwater.train.config import ConfigError, TrainConfig
from weakwater.train.stage import Stage

StageFactory = Callable[[Any, Any], Stage]  # (config, tokenizer or None) -> Stage


def parse_model_args(pairs: list[str]) -> dict[str, Any]:
    """``["dim=256", "rope_scaling={\\"kind\\": \\"yarn\\"}"]`` -> dict; values are JSON when they parse."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--model-arg {pair!r}: expected KEY=VALUE, e.g. --model-arg dim=256")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def add_stage_command(
    sub: argparse._SubParsersAction,
    name: str,
    help_text: str,
    config_cls: type[TrainConfig],
    make_stage: StageFactory,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Register ``weakwater <name>`` training ``config_cls`` runs with the stage ``make_stage`` builds."""
    parser = sub.add_parser(
        name,
        help=help_text,
        description=description or help_text,
    )
    parser.add_argument("--config", metavar="FILE", help="TOML/YAML/JSON file with these settings; flags override it")
    parser.add_argument(
        "--model-arg",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one model config field (repeatable), e.g. --model-arg dim=256 --model-arg n_layers=6",
    )
    add_arguments(parser, config_cls, skip=("model",))
    parser.set_defaults(func=lambda args: run_stage(args, name, config_cls, make_stage))
    return parser


def check_paths(cfg: TrainConfig, preset_flag: bool) -> None:
    """Input paths that do not exist, named as the flag the user typed (before anything else complains
    about a file inside them)."""
    if cfg.init and not Path(cfg.init).is_dir():
        raise ConfigError(f"--init {cfg.init}: no such directory (expected a saved model, e.g. runs/pt/final)")
    if cfg.init and preset_flag:
        raise ConfigError(f"--preset does nothing with --init: the model in {cfg.init} decides the shape; drop one")
    for flag, path in (("--data", cfg.data), ("--val-data", cfg.val_data), ("--tokenizer", cfg.tokenizer)):
        if path and not Path(path).exists():
            raise ConfigError(f"{flag} {path}: no such file or directory")


def run_stage(args: argparse.Namespace, name: str, config_cls: type[TrainConfig], make_stage: StageFactory) -> int:
    cfg = resolve(config_cls, args, section=name)
    if args.model_arg:
        cfg.model = {**cfg.model, **parse_model_args(args.model_arg)}
    cfg.validate()
    check_paths(cfg, preset_flag="preset" in vars(args))
    from weakwater.train import build
    from weakwater.train.trainer import Trainer

    tokenizer = build.load_tokenizer(cfg, required=True)
    trainer = Trainer(cfg, make_stage(cfg, tokenizer), tokenizer=tokenizer)
    result = trainer.fit()
    if trainer.interrupted:
        return 130
    if trainer.is_main:
        console.say(f"{name}: done, {trainer.step} steps; model saved to {result}")
    return 0


OUTPUTS = (
    "Outputs in --out: config.json, metrics.jsonl, checkpoints/, best/, final/ (the model), loss.png; "
    "with --lora-rank also adapter/ (PEFT layout) while final/ holds the merged model."
)


def register(sub: argparse._SubParsersAction) -> None:
    """Every training stage's command, in pipeline order."""
    from weakwater.train.stages.distill import DistillConfig, DistillStage
    from weakwater.train.stages.dpo import DPOConfig, DPOStage
    from weakwater.train.stages.online_dpo import OnlineDPOConfig, OnlineDPOStage
    from weakwater.train.stages.pretrain import PretrainStage
    from weakwater.train.stages.rl import RLConfig, RLStage
    from weakwater.train.stages.sft import SFTConfig, SFTStage

    add_stage_command(
        sub,
        "pretrain",
        "pretrain a model on token shards made by `weakwater prepare`",
        TrainConfig,
        lambda cfg, _tokenizer: PretrainStage(cfg),
        description="Next-token pretraining. Runs on one device or under torchrun (DDP, or FSDP2 with --fsdp). "
        + OUTPUTS,
    )
    add_stage_command(
        sub,
        "sft",
        "supervised fine-tuning on chat JSONL (loss on assistant tokens only)",
        SFTConfig,
        SFTStage,
        description="SFT on MiniMind {conversations: [...]} JSONL (also ShareGPT, Alpaca, question/answer CSV; "
        "`weakwater data convert-chat` converts them ahead). Loss on assistant tokens incl. the closing "
        "<|im_end|>. Long context: --max-seq-len N --rope-scaling linear|yarn from a shorter --init model. " + OUTPUTS,
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
