"""Repetition and degeneration of open-ended replies, greedy and sampled.

Measured on words (runs of Latin letters), single digits and single CJK characters, so the numbers do not depend on
the tokenizer and ours compare with MiniMind's:

- ``distinct_1`` / ``distinct_2``: unique unigrams (bigrams) / all unigrams (bigrams) of a reply, averaged
  over replies (Li et al., 2016, per reply: a reply that loops scores low whatever the others do);
- ``repeated_4gram``: share of a reply's 4-grams that already occurred earlier in the same reply (averaged over
  replies with a 4-gram); ``looping``: share of all replies that repeat any 4-gram;
- ``hit_token_limit``: share of replies that ran into ``max_new_tokens`` without ending their turn.

Prompts: a built-in bilingual set, or a file (``.txt``: one prompt per line; JSONL rows with ``prompt``,
``question``, ``instruction`` or a ``messages`` list whose last user turn is the prompt).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import torch

from weakwater.eval.rows import field, read_rows
from weakwater.eval.tasks import Reply, generate_replies
from weakwater.jsonl import DataError

BUILTIN_PROMPTS = (
    "Tell me a story about a river.",
    "Describe the city you live in.",
    "What do you like to do on a rainy day?",
    "Write a short letter to a friend.",
    "Explain why people travel.",
    "Tell me about your favourite food.",
    "What will the weather be like tomorrow?",
    "Describe a day at the market.",
    "讲一个关于河流的故事。",
    "介绍一下你住的城市。",
    "下雨天你喜欢做什么？",
    "给朋友写一封短信。",
    "说说人们为什么喜欢旅行。",
    "介绍一下你最喜欢的食物。",
    "描述一下市场里的一天。",
    "谈谈你对学习的看法。",
)

_UNITS = re.compile(r"[A-Za-z]+|[0-9]|[\u3400-\u9fff\uf900-\ufaff]")


def units(text: str) -> list[str]:
    """Words (lower-cased Latin letter runs), single digits and CJK characters; punctuation and spaces dropped."""
    return [u.lower() for u in _UNITS.findall(text)]


def _ngrams(seq: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


def distinct(seq: list[str], n: int) -> float | None:
    grams = _ngrams(seq, n)
    return len(set(grams)) / len(grams) if grams else None


def repeated_ngram_rate(seq: list[str], n: int = 4) -> float | None:
    """Share of n-grams that already appeared earlier in ``seq`` (0 for text that never repeats itself)."""
    grams = _ngrams(seq, n)
    if not grams:
        return None
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def repetition_metrics(replies: list[Reply]) -> dict[str, Any]:
    seqs = [units(r.text) for r in replies]
    return {
        "replies": len(replies),
        "distinct_1": _mean([distinct(s, 1) for s in seqs]),
        "distinct_2": _mean([distinct(s, 2) for s in seqs]),
        "repeated_4gram": _mean([repeated_ngram_rate(s, 4) for s in seqs]),
        "looping": sum(bool(repeated_ngram_rate(s, 4)) for s in seqs) / len(seqs),
        "hit_token_limit": sum(r.finish_reason == "length" for r in replies) / len(replies),
        "mean_units": sum(map(len, seqs)) / len(seqs),
    }


def _parse_prompt(row: dict[str, Any], where: str) -> str:
    if "messages" in row:
        users = [t.get("content") for t in row["messages"] if isinstance(t, dict) and t.get("role") == "user"]
        if not users or not isinstance(users[-1], str) or not users[-1].strip():
            raise DataError(f"{where}: 'messages' has no user turn with string content")
        return users[-1]
    return field(row, ("prompt", "question", "instruction"), where)


def load_prompts(path: str | Path | None, strict: bool = False) -> tuple[list[str], list[str]]:
    """Prompts (and malformed-row messages) from ``path``, or the built-in set when ``path`` is None."""
    if path is None or str(path) == "builtin":
        return list(BUILTIN_PROMPTS), []
    if str(path).endswith(".txt"):
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        prompts = [line.strip() for line in lines if line.strip()]
        if not prompts:
            raise DataError(f"{path}: no prompts")
        return prompts, []
    return read_rows(path, _parse_prompt, strict)


@torch.no_grad()
def evaluate_repetition(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int = 128,
    temperature: float = 0.8,
    samples: int = 2,
    batch_size: int = 32,
    weights: str = "fp32",
    seed: int = 0,
    progress: bool = False,
    examples: int = 2,
) -> dict[str, Any]:
    """Metrics of greedy replies and of ``samples`` replies per prompt sampled at ``temperature``."""
    t0 = time.perf_counter()
    convs = [[{"role": "user", "content": p}] for p in prompts]
    greedy = generate_replies(
        model, tokenizer, convs, max_new_tokens, batch_size, weights, progress="repetition greedy" if progress else None
    )
    result: dict[str, Any] = {"prompts": len(prompts), "max_new_tokens": max_new_tokens}
    result["greedy"] = repetition_metrics(greedy)
    if samples > 0:
        sampled = generate_replies(
            model, tokenizer, [c for c in convs for _ in range(samples)], max_new_tokens, batch_size, weights,
            temperature=temperature, seed=seed, progress="repetition sampled" if progress else None,
        )  # fmt: skip
        result["sampled"] = {**repetition_metrics(sampled), "temperature": temperature, "per_prompt": samples}
    result["examples"] = [{"prompt": p, "reply": r.text} for p, r in list(zip(prompts, greedy))[:examples]]
    result["time_s"] = round(time.perf_counter() - t0, 2)
    return result
