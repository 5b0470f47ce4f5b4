"""``weakwater eval ppl|bpb|choice|tasks|math|repetition|needle|suite``: measure saved models (docs/eval.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from weakwater.console import say
from weakwater.device import DEVICE_HELP, pick_device
from weakwater.infer.fast import WEIGHT_FORMATS


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="saved WeakWater model directory")
    p.add_argument("--adapter", metavar="DIR", help="LoRA adapter directory to apply on top of the model")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--out", metavar="FILE.json", help="also write the results here")


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval", help="evaluate models: math, repetition, long context, bits-per-byte, multiple choice, suite"
    )
    ev_sub = ev.add_subparsers(dest="eval_command", metavar="<kind>", required=True)

    ppl = ev_sub.add_parser("ppl", aliases=["bpb"], help="loss, perplexity and bits-per-byte on a JSONL text file")
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
    ch.add_argument("--strict", action="store_true", help="stop at the first malformed row (default: report it)")
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

    m = ev_sub.add_parser("math", help="generative math (GSM8K, Chinese word problems): greedy accuracy, pass@k")
    _common(m)
    m.add_argument("--data", default="builtin", metavar="FILE.jsonl|builtin",
                   help="GSM8K-style {question, answer '... #### 42'} or {question, answer} rows (default: the demo "
                   "world's held-out problems)")  # fmt: skip
    _generation_flags(m, max_new_tokens=256)
    m.add_argument("--samples", type=int, default=0, help="also sample K replies per problem: pass@1 and pass@K")
    m.add_argument("--temperature", type=float, default=0.7, help="sampling temperature for --samples")
    m.set_defaults(func=run_math)

    rep = ev_sub.add_parser("repetition", help="distinct-1/2, repeated 4-grams, replies hitting the token limit")
    _common(rep)
    rep.add_argument("--data", default="builtin", metavar="FILE|builtin",
                     help="prompts: .txt (one per line) or JSONL {prompt} / {messages} (default: built-in, "
                     "bilingual)")  # fmt: skip
    _generation_flags(rep, max_new_tokens=128)
    rep.add_argument("--samples", type=int, default=2, help="replies sampled per prompt (0: greedy only)")
    rep.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")
    rep.set_defaults(func=run_repetition)

    nd = ev_sub.add_parser("needle", help="pass key hidden at depths 0-100%% of growing prompts; heatmap PNG")
    _common(nd)
    nd.add_argument("--lengths", type=_int_list, metavar="N,N,...",
                    help="prompt lengths in tokens (default: 1/4 to 1.5x the model's context)")  # fmt: skip
    nd.add_argument("--trials", type=int, default=4, help="pass keys per (depth, length) cell")
    nd.add_argument("--plot", metavar="FILE.png", help="write the depth x length heatmap here")
    nd.set_defaults(func=run_needle)

    su = ev_sub.add_parser(
        "suite", help="several tasks on one or more models: report.md + report.json + plots, a column per model"
    )
    su.add_argument("--model", action="append", required=True, metavar="DIR", help="model directory (repeatable)")
    su.add_argument("--name", action="append", metavar="NAME", help="column name for each --model, in order")
    su.add_argument("--out", required=True, metavar="DIR", help="report directory")
    su.add_argument("--tasks", type=lambda s: tuple(s.split(",")), default=("math", "repetition", "needle"),
                    help="comma-separated: math,repetition,needle,bpb,choice,tasks (default: math,repetition,needle; "
                    "bpb, choice and tasks also need their data flag)")  # fmt: skip
    su.add_argument("--math-data", action="append", metavar="FILE|builtin", help="math rows (repeatable)")
    su.add_argument("--bpb-data", metavar="FILE.jsonl", help="held-out text rows {text} for bits-per-byte")
    su.add_argument("--choice-data", metavar="CSV|DIR", help="C-Eval/CMMLU CSV file or directory")
    su.add_argument("--tasks-data", action="append", default=[], metavar="FILE.jsonl", help="demo eval rows")
    su.add_argument("--repetition-prompts", metavar="FILE", help="prompts for the repetition task")
    su.add_argument("--samples", type=int, default=4, help="sampled replies per math problem (pass@k); 0: greedy only")
    su.add_argument("--max-new-tokens", type=int, default=256, help="reply budget for math")
    su.add_argument("--needle-lengths", type=_int_list, metavar="N,N,...", help="needle prompt lengths")
    su.add_argument("--limit", type=int, help="at most N items per task")
    su.add_argument("--weights", choices=WEIGHT_FORMATS, default="fp32", help="decode with fp32 or int8 weights")
    su.add_argument("--batch-size", type=int, default=32, help="replies generated together")
    su.add_argument("--strict", action="store_true", help="stop at the first malformed data row")
    su.set_defaults(func=run_suite)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _generation_flags(p: argparse.ArgumentParser, max_new_tokens: int) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help="reply budget in tokens")
    p.add_argument("--limit", type=int, help="only the first N rows")
    p.add_argument("--batch-size", type=int, default=32, help="replies generated together")
    p.add_argument("--weights", choices=WEIGHT_FORMATS, default="fp32", help="decode with fp32 or int8 weights (CPU)")
    p.add_argument("--strict", action="store_true", help="stop at the first malformed row (default: report it)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampled replies")


def load(args: argparse.Namespace) -> tuple[torch.nn.Module, Any]:
    """The model (with ``--adapter`` applied) on the chosen device, and its tokenizer."""
    return load_model_dir(args.model, args.device, args.adapter)


def load_model_dir(path: str, device: str = "auto", adapter: str | None = None) -> tuple[torch.nn.Module, Any]:
    """The one way evaluation loads a model directory (ours, or a MiniMind import) and its tokenizer."""
    from weakwater.model.io import load_model
    from weakwater.model.lora import load_adapter
    from weakwater.tokenizer import load_tokenizer

    device = pick_device(device)
    model = load_model(path, device=device)
    if adapter:
        load_adapter(model, adapter).to(device)
    return model.eval(), load_tokenizer(path)


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

    malformed: list[str] | None = None if args.strict else []
    questions = read_questions(args.data, malformed)
    _report_malformed(malformed or [])
    model, tok = load(args)
    result = evaluate_choice(model, tok, questions, shots=args.shots, scoring=args.scoring)
    return emit({**result, "malformed": malformed or []}, args.out)


def run_tasks(args: argparse.Namespace) -> int:
    from weakwater.eval.tasks import run_task

    model, tok = load(args)
    result = run_task(model, tok, args.data, args.max_new_tokens, args.limit, weights=args.weights)
    return emit(result, args.out)


def _report_malformed(malformed: list[str]) -> None:
    for message in malformed[:10]:
        say(f"malformed row skipped: {message}")
    if len(malformed) > 10:
        say(f"... {len(malformed) - 10} more malformed rows (all listed in the result)")


def run_math(args: argparse.Namespace) -> int:
    from weakwater.eval.math_qa import evaluate_math, load_problems

    problems, malformed = load_problems(args.data, args.strict)
    _report_malformed(malformed)
    model, tok = load(args)
    result = evaluate_math(
        model, tok, problems[: args.limit], args.max_new_tokens, args.samples, args.temperature, args.batch_size,
        args.weights, args.seed, progress=True,
    )  # fmt: skip
    return emit({**result, "malformed": malformed}, args.out)


def run_repetition(args: argparse.Namespace) -> int:
    from weakwater.eval.repetition import evaluate_repetition, load_prompts

    prompts, malformed = load_prompts(args.data, args.strict)
    _report_malformed(malformed)
    model, tok = load(args)
    result = evaluate_repetition(
        model, tok, prompts[: args.limit], args.max_new_tokens, args.temperature, args.samples, args.batch_size,
        args.weights, args.seed, progress=True,
    )  # fmt: skip
    return emit({**result, "malformed": malformed}, args.out)


def run_needle(args: argparse.Namespace) -> int:
    from weakwater.eval.needle import evaluate_needle, plot_heatmaps

    model, tok = load(args)
    result = evaluate_needle(model, tok, args.lengths, trials=args.trials)
    if args.plot:
        plot_heatmaps({Path(args.model).name: result}, args.plot)
    return emit(result, args.out)


def run_suite(args: argparse.Namespace) -> int:
    from weakwater.eval.suite import SuiteConfig, run_suite

    cfg = SuiteConfig(
        tasks=args.tasks, math_data=args.math_data or ["builtin"], bpb_data=args.bpb_data,
        choice_data=args.choice_data, tasks_data=args.tasks_data, repetition_prompts=args.repetition_prompts,
        limit=args.limit, samples=args.samples, max_new_tokens=args.max_new_tokens, needle_lengths=args.needle_lengths,
        weights=args.weights, batch_size=args.batch_size, strict=args.strict,
    )  # fmt: skip
    report = run_suite(args.model, cfg, args.out, args.name)
    print(report.read_text(encoding="utf-8"))
    return 0
