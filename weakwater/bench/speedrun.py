"""``weakwater bench speedrun``: wall time to a target held-out loss, recipe against recipe.

A fixed model shape pretrains on a fixed JSONL corpus (tokenised once, 10% of documents held out)
under several recipes, each through the one Trainer (its optimizer, schedule, clipping, precision),
from the same initial weights on the same batches. Their optimizer steps are interleaved round by
round (the order flipping each round), so a busy machine slows every recipe alike; only training
steps are timed (the held-out evaluations between them are not).

The target is the baseline's final held-out loss at the same budget unless ``--target`` is given;
a recipe's time to target is its training time up to the first evaluation at or below it.
``baseline`` is MiniMind's pretraining recipe: AdamW (betas 0.9/0.999, weight decay 0.01), lr 5e-4,
cosine to 10% without warmup. The other recipes change one thing each, or combine them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from weakwater.bench.common import add_run_arguments, environment, format_table, write_json
from weakwater.device import pick_device, synchronize
from weakwater.model.config import PRESETS, ModelConfig, preset
from weakwater.model.llama import Transformer
from weakwater.train.config import TrainConfig

BASELINE: dict[str, Any] = dict(
    optimizer="adamw", lr=5e-4, beta2=0.999, weight_decay=0.01, warmup_steps=0, schedule="cosine", min_lr_ratio=0.1
)

_PRETRAIN_DEFAULTS = TrainConfig.__dataclass_fields__
# Each recipe: TrainConfig overrides on top of the baseline, plus "zero_init" / "model" (ModelConfig fields).
RECIPES: dict[str, dict[str, Any]] = {
    "baseline": {},
    "ours": {k: _PRETRAIN_DEFAULTS[k].default for k in BASELINE},  # `weakwater pretrain`'s defaults (Muon + WSD)
    "ours-before": dict(lr=1e-3, beta2=0.95, weight_decay=0.1, warmup_steps=50),  # them before: AdamW + cosine
    "lr x4": dict(lr=2e-3),
    "wsd": dict(schedule="wsd", warmup_steps=5, min_lr_ratio=0.0),
    "zero-init": dict(zero_init=True),
    "muon": dict(optimizer="muon"),
    "muon lr x4": dict(optimizer="muon", lr=2e-3),
    "qk-norm": dict(model={"qk_norm": True}),
    "compile": dict(compile=True),
    "combined": dict(optimizer="muon", lr=2e-3, schedule="wsd", warmup_steps=5, min_lr_ratio=0.0, zero_init=True),
}
DEFAULT_RECIPES = ("baseline", "ours", "ours-before", "lr x4", "wsd", "zero-init", "muon", "muon lr x4", "combined")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="FILE", help='pretraining JSONL ({"text": ...} per line)')
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer directory")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="model shape (default: tiny)")
    p.add_argument(
        "--model-arg",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="change one field of the preset's shape (repeatable), e.g. --model-arg dim=128",
    )
    p.add_argument("--seq", type=int, default=256, help="tokens per sequence (default: 256)")
    p.add_argument("--batch", type=int, default=8, help="sequences per step (default: 8)")
    p.add_argument("--epochs", type=float, default=1.0, help="training budget in passes over the data (default: 1)")
    p.add_argument(
        "--recipes",
        default=",".join(DEFAULT_RECIPES),
        help=f"comma-separated, the first is the reference; known: {', '.join(RECIPES)} (default: %(default)s)",
    )
    p.add_argument("--target", type=float, default=None, help="held-out loss to reach (default: the reference's final)")
    p.add_argument("--evals", type=int, default=20, help="held-out evaluations per run (default: 20)")
    add_run_arguments(p, "weights, data order and split")


def recipe_config(name: str, data: Path, out: Path, args: argparse.Namespace, steps: int) -> Any:
    known = {f.name for f in fields(TrainConfig)}
    over = {k: v for k, v in {**BASELINE, **RECIPES[name]}.items() if k in known}
    return TrainConfig(
        data=str(data),
        out=str(out),
        preset=args.preset,
        max_steps=steps,
        batch_size=args.batch,
        seq_len=args.seq,
        device=args.device,
        seed=args.seed,
        eval_every=0,
        save_every=0,
        log_every=10**9,
        plot=False,
        **over,
    )


def build_model(name: str, args: argparse.Namespace, vocab: int) -> Transformer:
    """The shared initial weights (same seed for every recipe), then the recipe's model changes."""
    recipe = RECIPES[name]
    extra = recipe.get("model", {})
    unknown = set(extra) - {f.name for f in fields(ModelConfig)}
    if unknown:
        raise ValueError(f"recipe {name!r} needs model option(s) {', '.join(sorted(unknown))}, not in this version")
    from weakwater.train.cli import parse_model_args

    torch.manual_seed(args.seed)
    shape = {"max_seq_len": max(args.seq, PRESETS[args.preset]["max_seq_len"]), **parse_model_args(args.model_arg)}
    config = preset(args.preset, vocab_size=vocab, **shape)
    model = Transformer(config)
    if extra:  # a new option may add parameters: keep the shared ones, the new ones keep their own init
        changed = Transformer(ModelConfig(**{**config.to_dict(), **extra}))
        changed.load_state_dict(model.state_dict(), strict=False)
        model = changed
    if recipe.get("zero_init"):
        # Residual branches start as the identity: every block adds nothing until it has learned to.
        for param_name, p in model.named_parameters():
            if param_name.endswith(("o_proj.weight", "down_proj.weight")):
                torch.nn.init.zeros_(p)
    return model


def run_budget(
    names: list[str], data: Path, work: Path, args: argparse.Namespace, tokenizer: Any
) -> tuple[dict[str, dict[str, Any]], int]:
    """Train every recipe for the budget, interleaved; returns each one's eval curve and the step count."""
    from weakwater.train.stages.pretrain import PretrainStage
    from weakwater.train.trainer import Trainer

    device = pick_device(args.device)
    runs: dict[str, dict[str, Any]] = {}
    for name in names:
        probe = recipe_config(name, data, work / "probe", args, 1)
        stage = PretrainStage(probe)
        train, val = stage.datasets()
        steps = max(1, int(args.epochs * (len(train) // args.batch)))
        cfg = recipe_config(name, data, work / name.replace(" ", "_"), args, steps)
        if val is None:
            raise ValueError(f"{args.data}: too few documents for a held-out split")
        cfg.eval_batches = max(1, min(8, len(val) // args.batch))  # the same fixed held-out batches every time
        trainer = Trainer(cfg, PretrainStage(cfg), model=build_model(name, args, tokenizer.vocab_size))
        runs[name] = {"trainer": trainer, "train_s": 0.0, "curve": [], "steps": steps}
    steps = runs[names[0]]["steps"]
    every = max(1, steps // args.evals)
    for step in range(steps):
        for name in names if step % 2 == 0 else names[::-1]:
            run = runs[name]
            synchronize(device)
            start = time.perf_counter()
            if run["trainer"]._train_step() is None:
                raise RuntimeError(f"recipe {name!r}: a non-finite step at {step}; lower its learning rate")
            synchronize(device)
            run["train_s"] += time.perf_counter() - start
            if (step + 1) % every == 0 or step + 1 == steps:
                val_loss = run["trainer"].evaluate()["val_loss"]
                run["curve"].append({"step": step + 1, "train_s": run["train_s"], "val_loss": val_loss})
                # One line per evaluation, so a long run can be budgeted from its first lines.
                print(
                    f"  step {step + 1}/{steps} {name}: held-out loss {val_loss:.4f}, train {run['train_s']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    for run in runs.values():
        run.pop("trainer")
    return runs, steps


def summarise(runs: dict[str, dict[str, Any]], target: float | None, tokens_per_step: int) -> dict[str, Any]:
    names = list(runs)
    reference = runs[names[0]]
    target = reference["curve"][-1]["val_loss"] if target is None else target
    rows = []
    for name, run in runs.items():
        hit = next((p for p in run["curve"] if p["val_loss"] <= target), None)
        row = {
            "recipe": name,
            "final_val_loss": run["curve"][-1]["val_loss"],
            "train_s": run["train_s"],
            "steps_to_target": hit["step"] if hit else None,
            "tokens_to_target": hit["step"] * tokens_per_step if hit else None,
            "s_to_target": hit["train_s"] if hit else None,
        }
        rows.append(row)
    ref_s = rows[0]["s_to_target"]
    for row in rows:
        row["time_ratio"] = row["s_to_target"] / ref_s if row["s_to_target"] and ref_s else None
    return {"target": target, "rows": rows, "curves": {n: r["curve"] for n, r in runs.items()}}


def run(args: argparse.Namespace) -> int:
    from weakwater.data.prepare import prepare
    from weakwater.tokenizer import load_tokenizer

    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown or not names:
        raise ValueError(f"--recipes: unknown {', '.join(unknown) or '(none)'}; known: {', '.join(RECIPES)}")
    if not Path(args.data).is_file():
        raise FileNotFoundError(f"--data {args.data}: no such file")
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(args.tokenizer)
    for name in names:
        build_model(name, args, tokenizer.vocab_size)  # an unavailable option fails now, not after an hour
    work = Path(tempfile.mkdtemp(prefix="weakwater-speedrun-"))
    try:
        data = work / "tokens"
        prepare([args.data], args.tokenizer, str(data), val_frac=0.1, workers=1)
        runs, steps = run_budget(names, data, work, args, tokenizer)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = summarise(runs, args.target, args.batch * args.seq)
    result.update(
        benchmark="speedrun",
        args={k: v for k, v in vars(args).items() if k != "func"},
        steps=steps,
        recipes={n: {**BASELINE, **RECIPES[n]} for n in names},
        environment=environment(pick_device(args.device)),
    )
    print(
        f"speedrun: preset {args.preset}, {args.batch}x{args.seq} tokens per step, {steps} steps "
        f"({args.epochs:g} epochs), target held-out loss {result['target']:.4f} "
        f"({'given' if args.target is not None else names[0] + ' at the end'})"
    )
    columns = [
        ("recipe", "recipe"),
        ("final_val_loss", "final val loss"),
        ("steps_to_target", "steps to target"),
        ("s_to_target", "train s to target"),
        ("time_ratio", f"time / {names[0]}"),
        ("train_s", "train s (all steps)"),
    ]
    print(format_table(result["rows"], columns))
    write_json(result, args.json)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "speedrun",
        help="wall time to a target held-out loss: recipes (Muon, WSD, zero-init, lr, compile) vs a baseline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run)
