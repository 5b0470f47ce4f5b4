"""Held-out evaluation from real generations and log-probs: exact match, format compliance, preferences.

Eval files are JSONL rows ``{"messages": [{"role": "user", ...}], "answer": str, "task": str}``. A
generation is correct when its answer part (after ``</think>``, or inside ``<answer>`` when present),
normalised (strip, lower-case, trailing punctuation removed), equals or starts with the normalised
expected answer. Greedy decoding, so numbers are reproducible.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from weakwater.data.dpo import to_pair
from weakwater.data.jsonl import read_jsonl
from weakwater.data.sft import tokenize_conversation
from weakwater.infer import Generator, SamplingParams, end_token_ids
from weakwater.train.losses import sequence_logps

TRAILING_PUNCT = " \t\r\n.,!?;:。，！？；：、\"'”’)）"
# A well-formed R1 answer: one think block, then one answer block, nothing outside them.
R1_FORMAT = re.compile(r"\s*<think>\n?.*?\n?</think>\s*<answer>\n?.*?\S.*?\n?</answer>\s*", re.DOTALL)


def normalize(text: str) -> str:
    return text.strip().lower().rstrip(TRAILING_PUNCT).strip()


def answer_part(generation: str) -> str:
    """The text a user would read as the answer: after ``</think>``, inside ``<answer>`` if present."""
    text = generation.split("</think>")[-1] if "</think>" in generation else generation
    if "<answer>" in text:
        text = text.split("<answer>", 1)[1].split("</answer>", 1)[0]
    return text


def is_correct(generation: str, answer: str) -> bool:
    got, want = normalize(answer_part(generation)), normalize(answer)
    return bool(want) and got.startswith(want)


def is_well_formed(generation: str) -> bool:
    """``<think>…</think><answer>…</answer>`` with a non-empty answer and nothing else around them."""
    return R1_FORMAT.fullmatch(generation) is not None


def load_eval(path: str | Path) -> list[dict[str, Any]]:
    """Eval rows; a row without ``messages``/``answer`` is a broken eval set, so it raises (strict)."""
    rows = []
    for line_no, row in read_jsonl(path, strict=True):
        if not isinstance(row.get("messages"), list) or not isinstance(row.get("answer"), str):
            raise ValueError(f"{path}:{line_no}: eval rows need 'messages' (list) and 'answer' (string)")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: empty eval set")
    return rows


@torch.no_grad()
def generate_answers(
    model: torch.nn.Module,
    tokenizer: Any,
    conversations: Sequence[list[dict[str, str]]],
    max_new_tokens: int = 64,
    batch_size: int = 32,
    weights: str = "fp32",
    temperature: float = 0.0,
    seed: int = 0,
) -> list[str]:
    """Chat replies (stop at the end-of-turn token), batched: greedy, or sampled at ``temperature`` with
    conversation i seeded ``seed + i`` (so a reply does not depend on the batching)."""
    gen = Generator(model, tokenizer, device=str(next(model.parameters()).device), weights=weights)
    stop = end_token_ids(tokenizer)
    params = [
        SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, stop_token_ids=stop, seed=seed + i)
        for i in range(len(conversations))
    ]
    prompts = [tokenizer.encode(tokenizer.render_chat(m, add_generation_prompt=True)) for m in conversations]
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        for ids in gen.generate(prompts[start : start + batch_size], params[start : start + batch_size]):
            out.append(tokenizer.decode(ids))
    return out


def run_task(
    model: torch.nn.Module,
    tokenizer: Any,
    eval_jsonl: str | Path,
    max_new_tokens: int = 64,
    limit: int | None = None,
    samples: int = 3,
    weights: str = "fp32",
) -> dict[str, Any]:
    """Accuracy (overall and per task), format-compliance rate and a few example generations;
    ``weights="int8"`` answers with the int8 decoding engine (to measure what it costs)."""
    rows = load_eval(eval_jsonl)[:limit]
    generations = generate_answers(model, tokenizer, [r["messages"] for r in rows], max_new_tokens, weights=weights)
    per_task: dict[str, list[bool]] = defaultdict(list)
    correct, formatted = [], []
    for row, text in zip(rows, generations):
        ok = is_correct(text, row["answer"])
        correct.append(ok)
        formatted.append(is_well_formed(text))
        per_task[row.get("task", "all")].append(ok)
    return {
        "n": len(rows),
        "accuracy": sum(correct) / len(rows),
        "format_rate": sum(formatted) / len(rows),
        "per_task": {task: sum(v) / len(v) for task, v in sorted(per_task.items())},
        "examples": [
            {"prompt": r["messages"][-1]["content"], "answer": r["answer"], "generation": g}
            for r, g in list(zip(rows, generations))[:samples]
        ],
    }


@torch.no_grad()
def pair_logps(
    model: torch.nn.Module, tokenizer: Any, pairs_jsonl: str | Path, max_len: int = 512, per_token: bool = False
) -> torch.Tensor:
    """(N, 2) summed log-probs of each pair's chosen and rejected final answers; with ``per_token``
    their mean per answer token instead (SimPO's length-normalised score: a sum favours short
    answers, so it cannot tell whether a model still likes rambling or repeated text)."""
    device = next(model.parameters()).device
    model.eval()
    rows = []
    for line_no, record in read_jsonl(pairs_jsonl, strict=True):
        try:
            chosen, rejected = to_pair(record)
        except ValueError as e:
            raise ValueError(f"{pairs_jsonl}:{line_no}: {e}") from e
        pair = []
        for messages in (chosen, rejected):
            ids, mask = tokenize_conversation(tokenizer, messages, last_turn_only=True)
            ids, mask = ids[-max_len:], mask[-max_len:]
            targets = torch.tensor([t if m else -100 for t, m in zip(ids[1:], mask[1:])], device=device)
            logits = model(torch.tensor([ids[:-1]], device=device))
            total, count = sequence_logps(logits, targets[None])
            pair.append(total[0] / count[0].clamp(min=1) if per_token else total[0])
        rows.append(torch.stack(pair))
    return torch.stack(rows).cpu()


def preference_metrics(
    policy: torch.Tensor, reference: torch.Tensor | None = None, kinds: Sequence[str] | None = None
) -> dict[str, Any]:
    """Preference accuracy: share of pairs whose chosen answer wins.

    Without ``reference``: by the policy's own log-prob (usable before any DPO step). With it: by the
    DPO implicit reward ``logp_policy - logp_reference``. With ``kinds`` (one label per pair, e.g. the
    rejected answer's failure), also the accuracy per kind.
    """
    score = policy if reference is None else policy - reference
    margin = score[:, 0] - score[:, 1]
    result: dict[str, Any] = {"accuracy": float((margin > 0).float().mean()), "mean_margin": float(margin.mean())}
    if kinds is not None:
        wins: dict[str, list[bool]] = defaultdict(list)
        for kind, m in zip(kinds, margin.tolist(), strict=True):
            wins[kind].append(m > 0)
        result["per_kind"] = {k: sum(v) / len(v) for k, v in sorted(wins.items())}
    return result
