"""Generative math: the model writes a reply, the one answer checker (:mod:`weakwater.answers`) judges it.

Rows (JSONL), one problem each:

- GSM8K: ``{"question", "answer"}`` where ``answer`` is the worked solution ending in ``#### 42``;
- Chinese math word problems (CMATH / Ape210K style): ``{"question", "answer"}`` with the bare answer (a number,
  ``"3/4"``, ``"50%"``); ``problem``/``original_text`` and ``ans``/``golden`` are accepted too;
- the demo's held-out rows ``{"messages": [user turn], "answer"}``.

``builtin`` is the demo world's held-out multi-step problems (column additions and shopping problems, English
and Chinese; the demo's ``eval_reasoning.jsonl`` for seed 0). Greedy accuracy, and with ``samples`` > 0 the
pass@1 and pass@k of ``samples`` replies per problem sampled at ``temperature``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from math import comb
from pathlib import Path
from typing import Any

import torch

from weakwater.answers import answers_match, extract_answer, gsm8k_gold, is_well_formed
from weakwater.eval.rows import field, read_rows
from weakwater.eval.tasks import generate_replies
from weakwater.jsonl import DataError

BUILTIN = "builtin"


@dataclass(frozen=True)
class Problem:
    question: str
    gold: str
    where: str  # file:line


def parse_problem(row: dict[str, Any], where: str) -> Problem:
    if "messages" in row:
        turns = row["messages"]
        users = [t.get("content") for t in turns if isinstance(t, dict) and t.get("role") == "user"]
        if not users or not isinstance(users[-1], str):
            raise DataError(f"{where}: 'messages' has no user turn with string content")
        question = users[-1]
    else:
        question = field(row, ("question", "problem", "original_text"), where)
    answer = field(row, ("answer", "ans", "golden", "final_answer"), where, (str, int, float))
    gold = gsm8k_gold(answer) if isinstance(answer, str) and "####" in answer else str(answer).strip()
    return Problem(question.strip(), gold, where)


def load_problems(data: str | Path, strict: bool = False) -> tuple[list[Problem], list[str]]:
    """Problems of a JSONL file (or the built-in set) and the malformed rows' ``file:line: reason`` messages."""
    if str(data) == BUILTIN:
        from weakwater.data.synth.generate import heldout_problems

        rows = heldout_problems()
        return [parse_problem(r, f"{BUILTIN}:{i + 1}") for i, r in enumerate(rows)], []
    return read_rows(data, parse_problem, strict)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al., 2021): 1 - C(n-c,k)/C(n,k)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


@torch.no_grad()
def evaluate_math(
    model: torch.nn.Module,
    tokenizer: Any,
    problems: list[Problem],
    max_new_tokens: int = 256,
    samples: int = 0,
    temperature: float = 0.7,
    batch_size: int = 32,
    weights: str = "fp32",
    seed: int = 0,
    progress: bool = False,
    examples: int = 3,
) -> dict[str, Any]:
    """Greedy accuracy (+ sampled pass@1 / pass@``samples`` when ``samples`` > 0) over ``problems``."""
    t0 = time.perf_counter()
    convs = [[{"role": "user", "content": p.question}] for p in problems]
    greedy = generate_replies(
        model, tokenizer, convs, max_new_tokens, batch_size, weights, progress="math greedy" if progress else None
    )
    correct = [answers_match(extract_answer(r.text), p.gold) for p, r in zip(problems, greedy)]
    result: dict[str, Any] = {
        "n": len(problems),
        "accuracy": sum(correct) / len(problems),
        "answered": sum(extract_answer(r.text) is not None for r in greedy) / len(problems),
        "well_formed": sum(is_well_formed(r.text) for r in greedy) / len(problems),
        "hit_token_limit": sum(r.finish_reason == "length" for r in greedy) / len(problems),
    }
    if samples > 0:
        sampled = generate_replies(
            model, tokenizer, [c for c in convs for _ in range(samples)], max_new_tokens, batch_size, weights,
            temperature=temperature, seed=seed, progress="math sampled" if progress else None,
        )  # fmt: skip
        hits = [
            sum(answers_match(extract_answer(r.text), p.gold) for r in sampled[i * samples : (i + 1) * samples])
            for i, p in enumerate(problems)
        ]
        result.update(
            samples=samples,
            temperature=temperature,
            pass_at_1=sum(pass_at_k(samples, c, 1) for c in hits) / len(problems),
            pass_at_k=sum(pass_at_k(samples, c, samples) for c in hits) / len(problems),
        )
    result["examples"] = [
        {"question": p.question, "gold": p.gold, "reply": r.text, "extracted": extract_answer(r.text), "correct": ok}
        for p, r, ok in list(zip(problems, greedy, correct))[:examples]
    ]
    result["time_s"] = round(time.perf_counter() - t0, 2)
    return result
