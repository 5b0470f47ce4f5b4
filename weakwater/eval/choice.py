"""C-Eval / CMMLU-style multiple choice, scored by log-likelihood (no generation, no parsing).

A CSV has columns ``question, A, B, C, D, answer`` (any case; ``id`` and ``explanation`` are ignored) and
optionally ``subject``; without it the subject is the file name (C-Eval ships one file per subject, e.g.
``computer_network_val.csv``), and ``--data`` may be a directory of such files. Two scorings:

- ``letter`` (C-Eval's own): the prompt lists the options and ends with ``答案：``; the prediction is the
  letter A-D with the highest log-probability.
- ``text``: the prompt is the question alone; the prediction is the option whose text has the highest
  mean per-token log-probability (kinder to small models that have never seen the lettered format).

``shots`` > 0 prepends that many solved questions of the same subject (never the question itself).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from weakwater.model.loglik import IGNORE_INDEX, sequence_logprobs

LETTERS = ("A", "B", "C", "D")
SCORINGS = ("letter", "text")


@dataclass(frozen=True)
class Question:
    subject: str
    question: str
    options: tuple[str, str, str, str]
    answer: str  # one of LETTERS


def read_choice_csv(path: str | Path, malformed: list[str] | None = None) -> list[Question]:
    """Questions of one CSV; a bad row raises with file, line and column, or, given a ``malformed`` list, is
    recorded there (``"file:line: reason"``) and skipped."""
    path = Path(path)
    default_subject = path.stem.removesuffix("_val").removesuffix("_test").removesuffix("_dev")
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        columns = {name.strip().lower(): name for name in reader.fieldnames or [] if name}
        missing = [c for c in ("question", *[x.lower() for x in LETTERS], "answer") if c not in columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (have {list(columns)})")
        out = []
        for line_no, row in enumerate(reader, start=2):
            answer = (row[columns["answer"]] or "").strip().upper()
            if answer not in LETTERS:
                message = f"{path}:{line_no}: column 'answer' must be one of A-D, got {answer!r}"
                if malformed is None:
                    raise ValueError(message)
                malformed.append(message)
                continue
            subject = (row[columns["subject"]] or "").strip() if "subject" in columns else ""
            subject = subject or default_subject
            options = tuple((row[columns[x.lower()]] or "").strip() for x in LETTERS)
            out.append(Question(subject, (row[columns["question"]] or "").strip(), options, answer))  # type: ignore[arg-type]
    if not out:
        raise ValueError(f"{path}: no questions")
    return out


def read_questions(path: str | Path, malformed: list[str] | None = None) -> list[Question]:
    """One CSV, or every ``*.csv`` of a directory (``malformed``: see :func:`read_choice_csv`)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise FileNotFoundError(f"{path}: no .csv files")
        return [q for f in files for q in read_choice_csv(f, malformed)]
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    return read_choice_csv(path, malformed)


def format_question(q: Question, scoring: str) -> str:
    if scoring == "letter":
        options = "".join(f"\n{letter}. {text}" for letter, text in zip(LETTERS, q.options))
        return f"{q.question}{options}\n答案："
    return f"{q.question}\n答案："


def solved(q: Question, scoring: str) -> str:
    """A worked example for few-shot prompts."""
    answer = q.answer if scoring == "letter" else q.options[LETTERS.index(q.answer)]
    return f"{format_question(q, scoring)}{answer}\n\n"


def build_prompt(q: Question, pool: list[Question], shots: int, scoring: str) -> str:
    """``shots`` solved questions from ``pool`` (never ``q`` itself), then ``q``."""
    examples = [e for e in pool if e is not q][:shots]
    return "".join(solved(e, scoring) for e in examples) + format_question(q, scoring)


@torch.no_grad()
def continuation_logprobs(
    model: torch.nn.Module, context: list[int], continuations: list[list[int]], max_len: int
) -> list[tuple[float, int]]:
    """(summed log-prob, token count) of each continuation after ``context``, in one right-padded batch.

    The context is cut from the left when context + continuation exceeds ``max_len``.
    """
    device = next(model.parameters()).device
    rows = []
    for cont in continuations:
        if not cont:
            raise ValueError("empty answer option")
        ids = (context + cont)[-max_len - 1 :]
        rows.append(ids)
    width = max(len(r) for r in rows) - 1
    inputs = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)  # only the continuation is scored
    for i, (ids, cont) in enumerate(zip(rows, continuations)):
        inputs[i, : len(ids) - 1] = torch.tensor(ids[:-1])
        labels[i, len(ids) - 1 - len(cont) : len(ids) - 1] = torch.tensor(ids[-len(cont) :])
    totals, _ = sequence_logprobs(model(inputs.to(device)), labels.to(device))
    return [(total, len(cont)) for total, cont in zip(totals.tolist(), continuations)]


def evaluate_choice(
    model: torch.nn.Module,
    tokenizer: Any,
    questions: list[Question],
    shots: int = 0,
    scoring: str = "letter",
    max_len: int | None = None,
) -> dict[str, Any]:
    """Accuracy overall (micro), averaged over subjects (macro) and per subject."""
    if scoring not in SCORINGS:
        raise ValueError(f"--scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
    if shots < 0:
        raise ValueError(f"--shots must be >= 0, got {shots}")
    model.eval()
    max_len = max_len or model.config.max_seq_len
    by_subject: dict[str, list[Question]] = defaultdict(list)
    for q in questions:
        by_subject[q.subject].append(q)
    hits: dict[str, list[bool]] = defaultdict(list)
    predictions = []
    for q in questions:
        context = tokenizer.encode(build_prompt(q, by_subject[q.subject], shots, scoring))
        options = LETTERS if scoring == "letter" else q.options
        scores = continuation_logprobs(model, context, [tokenizer.encode(o) for o in options], max_len)
        values = [total if scoring == "letter" else total / n for total, n in scores]
        predicted = LETTERS[max(range(len(values)), key=values.__getitem__)]
        predictions.append(predicted)
        hits[q.subject].append(predicted == q.answer)
    per_subject = {s: sum(v) / len(v) for s, v in sorted(hits.items())}
    return {
        "questions": len(questions),
        "shots": shots,
        "scoring": scoring,
        "accuracy": sum(sum(v) for v in hits.values()) / len(questions),
        "macro_accuracy": sum(per_subject.values()) / len(per_subject),
        "per_subject": per_subject,
        "predictions": predictions,
    }
