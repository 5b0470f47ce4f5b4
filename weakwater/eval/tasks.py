"""Held-out evaluation from real generations and log-probs: exact match, format compliance, preferences.

Eval files are JSONL rows ``{"messages": [{"role": "user", ...}], "answer": str, "task": str}``. A
generation is judged by the one answer checker, :func:`weakwater.answers.is_correct` (the same the RL
rewards use). Greedy decoding, so numbers are reproducible.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from weakwater.answers import is_correct, is_well_formed
from weakwater.console import Progress
from weakwater.data.dpo import to_pair
from weakwater.data.sft import tokenize_conversation
from weakwater.infer import Generator, SamplingParams, end_token_ids
from weakwater.jsonl import read_jsonl
from weakwater.model.loglik import IGNORE_INDEX, sequence_logprobs


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


@dataclass(frozen=True)
class Reply:
    """One generated chat reply: its text, its token count, and why it ended ("stop" or "length")."""

    text: str
    tokens: int
    finish_reason: str


@torch.no_grad()
def generate_replies(
    model: torch.nn.Module,
    tokenizer: Any,
    conversations: Sequence[list[dict[str, str]]],
    max_new_tokens: int = 64,
    batch_size: int = 32,
    weights: str = "fp32",
    temperature: float = 0.0,
    seed: int = 0,
    top_p: float = 1.0,
    progress: str | None = None,
) -> list[Reply]:
    """Chat replies through the batched decoding engine (stop at the end-of-turn token): greedy, or sampled at
    ``temperature`` with conversation i seeded ``seed + i`` (so a reply does not depend on the batching).
    ``progress`` names a progress bar on stderr (None: silent)."""
    gen = Generator(model, tokenizer, device=str(next(model.parameters()).device), weights=weights)
    stop = end_token_ids(tokenizer)
    params = [
        SamplingParams(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, stop_token_ids=stop, seed=seed + i
        )
        for i in range(len(conversations))
    ]
    prompts = [tokenizer.encode(tokenizer.render_chat(m, add_generation_prompt=True)) for m in conversations]
    out: list[Reply] = []
    with Progress(len(prompts), progress, unit="replies") if progress is not None else nullcontext() as bar:
        for start in range(0, len(prompts), batch_size):
            dec = gen.decoder(prompts[start : start + batch_size], params[start : start + batch_size])
            while not dec.done:
                dec.step()
            for r in sorted(dec.finished, key=lambda r: r.index):
                out.append(Reply(tokenizer.decode(r.tokens), len(r.tokens), r.finish_reason or "length"))
            if bar is not None:
                bar.update(len(prompts[start : start + batch_size]))
    return out


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
    """The texts of :func:`generate_replies`."""
    replies = generate_replies(model, tokenizer, conversations, max_new_tokens, batch_size, weights, temperature, seed)
    return [r.text for r in replies]


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
            labels = torch.tensor([t if m else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:])], device=device)
            logits = model(torch.tensor([ids[:-1]], device=device))
            total, count = sequence_logprobs(logits, labels[None])
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
