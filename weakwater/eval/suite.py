"""``weakwater eval suite``: several tasks on one or more models, one report card with a column per model.

Each task is also its own ``eval`` subcommand and its own function; the suite only runs them model after
model (one model in memory at a time), times them, and writes ``OUT/report.json`` (every number),
``OUT/report.md`` (the headline metrics, one column per model) and plots (``needle.png``: depth x length
heatmaps; ``summary.png``: the headline metrics as bars).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from weakwater.console import say

TASKS = ("math", "repetition", "needle", "bpb", "choice", "tasks")


@dataclass
class SuiteConfig:
    """What to run; a data-driven task (bpb, choice, tasks) runs only when its data is given."""

    tasks: tuple[str, ...] = ("math", "repetition", "needle")
    math_data: list[str] = field(default_factory=lambda: ["builtin"])
    bpb_data: str | None = None
    choice_data: str | None = None
    choice_scoring: str = "letter"
    tasks_data: list[str] = field(default_factory=list)
    repetition_prompts: str | None = None
    limit: int | None = None
    samples: int = 4  # sampled replies per math problem (pass@k) and 2 per repetition prompt
    temperature: float = 0.7
    max_new_tokens: int = 256
    repetition_tokens: int = 128
    needle_lengths: list[int] | None = None
    needle_trials: int = 4
    weights: str = "fp32"
    batch_size: int = 32
    strict: bool = False
    seed: int = 0
    progress: bool = True


def model_name(path: str | Path, taken: set[str]) -> str:
    """``runs/demo/sft/final`` -> ``sft``; other directories by their name; made unique with a suffix."""
    p = Path(path)
    name = p.parent.name if p.name == "final" and p.parent.name else p.name
    base, i = name, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def _say(message: str) -> None:
    say(f"[eval suite] {message}")


def run_model_tasks(model: torch.nn.Module, tokenizer: Any, cfg: SuiteConfig, needle_lengths: list[int]) -> dict:
    """Every task of ``cfg`` on one model; each result carries its ``time_s``."""
    from weakwater.eval import math_qa, needle, repetition

    out: dict[str, Any] = {}

    def timed(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        result = fn()
        result["time_s"] = round(time.perf_counter() - t0, 2)
        out[name] = result
        _say(f"  {name}: {result['time_s']:.1f}s")

    if "math" in cfg.tasks:
        for data in cfg.math_data:
            problems, malformed = math_qa.load_problems(data, cfg.strict)
            problems = problems[: cfg.limit]

            def math_task(problems: list = problems, malformed: list = malformed, data: str = data) -> dict:
                r = math_qa.evaluate_math(
                    model, tokenizer, problems, cfg.max_new_tokens, cfg.samples, cfg.temperature, cfg.batch_size,
                    cfg.weights, cfg.seed, cfg.progress,
                )  # fmt: skip
                return {**r, "data": str(data), "malformed": malformed}

            timed(f"math:{Path(data).stem if data != 'builtin' else 'builtin'}", math_task)
    if "repetition" in cfg.tasks:
        prompts, malformed = repetition.load_prompts(cfg.repetition_prompts, cfg.strict)
        prompts = prompts[: cfg.limit]
        timed("repetition", lambda: {**repetition.evaluate_repetition(
            model, tokenizer, prompts, cfg.repetition_tokens, 0.8, 2 if cfg.samples else 0, cfg.batch_size,
            cfg.weights, cfg.seed, cfg.progress), "malformed": malformed})  # fmt: skip
    if "needle" in cfg.tasks:
        timed("needle", lambda: needle.evaluate_needle(model, tokenizer, needle_lengths, trials=cfg.needle_trials))
    if "bpb" in cfg.tasks and cfg.bpb_data:
        from weakwater.eval.ppl import evaluate_ppl

        timed("bpb", lambda: evaluate_ppl(model, tokenizer, cfg.bpb_data, max_docs=cfg.limit))
    if "choice" in cfg.tasks and cfg.choice_data:
        from weakwater.eval.choice import evaluate_choice, read_questions

        bad: list[str] | None = None if cfg.strict else []
        questions = read_questions(cfg.choice_data, bad)[: cfg.limit]
        timed("choice", lambda: {**_drop(evaluate_choice(model, tokenizer, questions, scoring=cfg.choice_scoring)),
                                 "malformed": bad or []})  # fmt: skip
    if "tasks" in cfg.tasks:
        from weakwater.eval.tasks import run_task

        for data in cfg.tasks_data:
            timed(
                f"tasks:{Path(data).stem}",
                lambda data=data: run_task(model, tokenizer, data, 64, cfg.limit, weights=cfg.weights),
            )
    return out


def _drop(result: dict[str, Any]) -> dict[str, Any]:
    result.pop("predictions", None)  # one letter per question: noise in a report
    return result


def run_suite(models: list[str], cfg: SuiteConfig, out: str | Path, names: list[str] | None = None) -> Path:
    """Run ``cfg`` on every model directory, write the report files into ``out``; returns ``report.md``."""
    from weakwater.eval.cli import load_model_dir
    from weakwater.model.io import read_model_config

    unknown = [t for t in cfg.tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    labels = list(names or []) + [model_name(m, taken) for m in models[len(names or []) :]]
    # One length grid for every model, from the longest context among them, so the columns compare.
    contexts = [read_model_config(m)[0].max_seq_len for m in models]
    from weakwater.eval.needle import default_lengths

    lengths = cfg.needle_lengths or default_lengths(max(contexts))
    report: dict[str, Any] = {"settings": {**cfg.__dict__, "tasks": list(cfg.tasks)}, "models": {}}
    t_all = time.perf_counter()
    for label, path in zip(labels, models):
        _say(f"{label} ({path})")
        t0 = time.perf_counter()
        model, tok = load_model_dir(path)
        info = {"path": str(path), "params": model.num_params(), "context": model.config.max_seq_len}
        report["models"][label] = {**info, "results": run_model_tasks(model, tok, cfg, lengths)}
        report["models"][label]["time_s"] = round(time.perf_counter() - t0, 2)
        del model
    report["time_s"] = round(time.perf_counter() - t_all, 2)
    return write_suite_report(report, out)


# --- report ----------------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def headline(results: dict[str, Any]) -> list[tuple[str, str, float | None]]:
    """(metric label, formatted value, raw value for the bar chart) of one model's results."""
    rows: list[tuple[str, str, float | None]] = []
    for name, r in results.items():
        kind = name.split(":")[0]
        if kind == "math":
            rows.append((f"{name} greedy accuracy", _pct(r["accuracy"]), r["accuracy"]))
            if "pass_at_k" in r:
                k, t = r["samples"], r["temperature"]
                rows.append((f"{name} pass@1 (T={t})", _pct(r["pass_at_1"]), r["pass_at_1"]))
                rows.append((f"{name} pass@{k} (T={t})", _pct(r["pass_at_k"]), r["pass_at_k"]))
        elif kind == "repetition":
            for mode in ("greedy", "sampled"):
                if mode in r:
                    m = r[mode]
                    rows.append((f"repetition {mode}: repeated 4-grams (lower is better)", _pct(m["repeated_4gram"]),
                                 m["repeated_4gram"]))  # fmt: skip
                    rows.append((f"repetition {mode}: replies repeating a 4-gram", _pct(m["looping"]), m["looping"]))
                    for n in (1, 2):
                        value = m[f"distinct_{n}"]
                        rows.append((f"repetition {mode}: distinct-{n}", _num(value, 2), value))
                    rows.append((f"repetition {mode}: hit the token limit", _pct(m["hit_token_limit"]),
                                 m["hit_token_limit"]))  # fmt: skip
        elif kind == "needle":
            rows.append(("needle: pass key read back, within context", _pct(r["within_context"]), r["within_context"]))
            rows.append(("needle: beyond context", _pct(r["beyond_context"]), r["beyond_context"]))
        elif kind == "bpb":
            rows.append(("bits per byte (lower is better)", _num(r["bits_per_byte"]), None))
        elif kind == "choice":
            rows.append((f"multiple choice accuracy ({r['scoring']})", _pct(r["accuracy"]), r["accuracy"]))
        elif kind == "tasks":
            rows.append((f"{name} exact match", _pct(r["accuracy"]), r["accuracy"]))
    return rows


def render_suite(report: dict[str, Any]) -> str:
    models = report["models"]
    names = list(models)
    table: dict[str, dict[str, str]] = {}
    for name in names:
        for label, text, _ in headline(models[name]["results"]):
            table.setdefault(label, {})[name] = text
    lines = ["# WeakWater evaluation", "", "| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines.append("| parameters | " + " | ".join(f"{models[n]['params'] / 1e6:.2f}M" for n in names) + " |")
    lines.append("| context (tokens) | " + " | ".join(str(models[n]["context"]) for n in names) + " |")
    for label, cells in table.items():
        lines.append(f"| {label} | " + " | ".join(cells.get(n, "-") for n in names) + " |")
    task_names = list(dict.fromkeys(t for n in names for t in models[n]["results"]))
    lines.append("| time (s): " + ", ".join(task_names) + " | " + " | ".join(
        " / ".join(f"{models[n]['results'][t]['time_s']:.0f}" if t in models[n]["results"] else "-" for t in task_names)
        for n in names) + " |")  # fmt: skip
    if any("needle" in models[n]["results"] for n in names):
        lines += ["", "![needle](needle.png)"]
    lines += ["", "![summary](summary.png)", ""]
    malformed = {(n, t): r["malformed"] for n in names for t, r in models[n]["results"].items() if r.get("malformed")}
    if malformed:
        (n, t), first = next(iter(malformed.items()))
        lines += [f"Malformed rows skipped in {t}: {len(first)} (first: {first[0]}); all in report.json.", ""]
    lines += ["## Models", ""]
    lines += [f"- {n}: `{models[n]['path']}`" for n in names]
    examples = [(n, t, r["examples"][0]) for n in names for t, r in models[n]["results"].items() if r.get("examples")]
    if examples:
        lines += ["", "## One example reply per task", ""]
        for n, t, ex in examples:
            prompt = ex.get("question") or ex.get("prompt")
            reply = ex.get("reply") or ex.get("generation")
            lines.append(f"- {n} / {t}: `{prompt[:80]!r}` -> `{reply[:160]!r}`")
    per_model = ", ".join(f"{n} {models[n]['time_s']:.0f}s" for n in names)
    lines += ["", f"Total time: {report['time_s']:.0f}s ({per_model})."]
    return "\n".join(lines) + "\n"


def plot_summary(report: dict[str, Any], path: Path) -> Path:
    """Grouped bars of every headline rate (0-100%), one colour per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = report["models"]
    names = list(models)
    labels = list(
        dict.fromkeys(
            label for n in names for label, _, v in headline(models[n]["results"]) if v is not None and 0 <= v <= 1
        )
    )
    values = {n: {label: v for label, _, v in headline(models[n]["results"])} for n in names}
    fig, ax = plt.subplots(figsize=(7, 0.35 * max(1, len(labels)) * max(1, len(names)) / 2 + 1.5))
    height = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        ys = [j + i * height for j in range(len(labels))]
        ax.barh(ys, [100 * (values[n].get(label) or 0) for label in labels], height=height, label=n)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(labels))], labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("%")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_suite_report(report: dict[str, Any], out: Path) -> Path:
    from weakwater.eval.needle import plot_heatmaps

    needles = {n: m["results"]["needle"] for n, m in report["models"].items() if "needle" in m["results"]}
    if needles:
        plot_heatmaps(needles, out / "needle.png")
    plot_summary(report, out / "summary.png")
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    path = out / "report.md"
    path.write_text(render_suite(report), encoding="utf-8")
    return path
