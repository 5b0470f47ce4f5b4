"""``weakwater eval ppl|choice|tasks``: measure a saved model (optionally with a LoRA adapter)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from weakwater.infer.fast import WEIGHT_FORMATS


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="saved WeakWater model directory")
    p.add_argument("--adapter", metavar="DIR", help="LoRA adapter directory to apply on top of the model")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default)")
    p.add_argument("--out", metavar="FILE.json", help="also write the results here")


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluate a model: perplexity, multiple choice, demo tasks")
    ev_sub = ev.add_subparsers(dest="eval_command", metavar="<kind>", required=True)

    ppl = ev_sub.add_parser("ppl", help="loss, perplexity and bits-per-byte on a JSONL text file")
    _common(ppl)
    ppl.add_argument(
        "--data",
        required=True,
        metavar="FILE.jsonl",
        help="JSONL: text rows, chats or preference pairs (read as tokenizer stats reads them)",
    )
    ppl.add_argument("--field", default="text", help="name of the text field (default: text)")
    ppl.add_argument("--max-docs", type=int, help="only the first N documents")
    ppl.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    ppl.set_defaults(func=run_ppl)

    ch = ev_sub.add_parser("choice", help="C-Eval/CMMLU-style multiple choice (CSV) by option log-likelihood")
    _common(ch)
    ch.add_argument("--data", required=True, metavar="CSV|DIR", help="CSV with question,A,B,C,D,answer[,subject]")
    ch.add_argument("--shots", type=int, default=0, help="solved examples of the same subject in the prompt")
    ch.add_argument(
        "--scoring", default="letter", choices=("letter", "text"), help="score answer letters or option texts"
    )
    ch.set_defaults(func=run_choice)

    tasks = ev_sub.add_parser("tasks", help="held-out demo tasks (exact match on greedy chat replies)")
    _common(tasks)
    tasks.add_argument("--data", required=True, metavar="FILE.jsonl", help="eval rows {messages, answer, task}")
    tasks.add_argument("--max-new-tokens", type=int, default=64, help="generation budget per question")
    tasks.add_argument("--limit", type=int, help="only the first N rows")
    tasks.add_argument(
        "--weights", choices=WEIGHT_FORMATS, default="fp32", help="decode with fp32 (default) or int8 weights (CPU)"
    )
    tasks.set_defaults(func=run_tasks)


def load(args: argparse.Namespace) -> tuple[torch.nn.Module, Any]:
    """The model (with ``--adapter`` applied) on the chosen device, and its tokenizer."""
    from weakwater.model.io import load_model
    from weakwater.model.lora import load_adapter
    from weakwater.tokenizer import load_tokenizer

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(args.model, device=device)
    if args.adapter:
        load_adapter(model, args.adapter).to(device)
    return model.eval(), load_tokenizer(args.model)


def emit(result: dict[str, Any], out: str | None) -> int:
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n", encoding="utf-8")
    return 0


def run_ppl(args: argparse.Namespace) -> int:
    from weakwater.eval.ppl import evaluate_ppl

    model, tok = load(args)
    return emit(evaluate_ppl(model, tok, args.data, args.field, args.max_docs, args.batch_size), args.out)


def run_choice(args: argparse.Namespace) -> int:
    from weakwater.eval.choice import evaluate_choice, read_questions

    model, tok = load(args)
    result = evaluate_choice(model, tok, read_questions(args.data), shots=args.shots, scoring=args.scoring)
    return emit(result, args.out)


def run_tasks(args: argparse.Namespace) -> int:
    from weakwater.eval.tasks import run_task

    model, tok = load(args)
    result = run_task(model, tok, args.data, args.max_new_tokens, args.limit, weights=args.weights)
    return emit(result, args.out)
