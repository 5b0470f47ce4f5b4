"""``weakwater <command>``: one entry point; each package registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module exposes ``register(subparsers)`` adding its commands with ``set_defaults(func=...)``.
COMMAND_MODULES = (
    "weakwater.model.cli",
    "weakwater.tokenizer.cli",
    "weakwater.data.prepare_cli",
    "weakwater.data.cli",
    "weakwater.train.cli",
    "weakwater.bench.cli",
    "weakwater.demo",
    "weakwater.export.cli",
    "weakwater.eval.cli",
    "weakwater.infer.cli",
    "weakwater.doctor",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weakwater",
        description="Build a small Chinese+English LLM from zero: tokenizer, pretraining, "
        "post-training, inference, serving and export.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from weakwater import console

    console.install()  # a dead stdout/stderr pipe must never kill a run before it saves (console.py)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        # User errors (bad data, bad config, missing files) get one clear line, not a traceback.
        print(f"weakwater {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
