"""Reward functions for RL on verifiable rewards, and their weighted sum.

A reward function follows TRL's convention, so functions written for TRL (a reward model included) plug in
unchanged: ``fn(prompts, completions, **kwargs) -> list[float | None]``, with

- ``prompts``: the text of each completion's last user turn (one entry per completion, so a prompt appears
  G times in a row), ``completions``: the generated replies as text (special tokens kept: ``<think>`` etc.);
- keyword arguments: ``answer`` (gold answers, None where the prompt has none), ``messages`` (the prompt
  conversations), ``completion_ids`` (token ids), ``finished`` (whether the reply ended with ``<|im_end|>``
  rather than at the token limit). Functions should accept ``**kwargs`` for the rest.

``None`` means "does not apply to this completion": it counts as 0 in the weighted sum and is left out of
that reward's logged mean. Built-ins:

- ``math``: 1 if the final answer (``<answer>``, ``\\boxed{}``, ``####`` or the last number) equals the gold
  answer as a number (:mod:`weakwater.answers`, the same checker evaluation uses), else 0;
- ``format``: 1 for a well-formed ``<think>...</think><answer>...</answer>`` reply, else 0;
- ``length``: 0 up to ``limit`` tokens, then falling linearly to -1 at twice the limit (a soft overlong
  penalty in the spirit of DAPO's);
- ``repetition``: minus the share of repeated token n-grams (0 for a reply without repeats, towards -1 for
  one that loops).

User functions are named ``module:function`` (importable from the current directory or PYTHONPATH) or
``path/to/file.py:function``.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

RewardFn = Callable[..., list]
BUILTIN_REWARDS = ("math", "format", "length", "repetition")


def math_reward(prompts: Sequence[str], completions: Sequence[str], answer: Sequence[str | None], **_: Any) -> list:
    from weakwater.answers import is_correct

    return [
        None if gold is None else float(is_correct(text, gold)) for text, gold in zip(completions, answer, strict=True)
    ]


def format_reward(prompts: Sequence[str], completions: Sequence[str], **_: Any) -> list:
    from weakwater.answers import is_well_formed

    return [1.0 if is_well_formed(text) else 0.0 for text in completions]


def length_reward(limit: int) -> RewardFn:
    """0 up to ``limit`` tokens, then linearly down to -1 at ``2 * limit`` and below that -1."""
    if limit < 1:
        raise ValueError(f"the length reward needs a limit >= 1 token, got {limit}")

    def length(prompts: Sequence[str], completions: Sequence[str], completion_ids: Sequence[Sequence[int]], **_: Any):
        return [-min(1.0, max(0, len(ids) - limit) / limit) for ids in completion_ids]

    return length


def repetition_reward(n: int) -> RewardFn:
    """Minus the share of repeated token n-grams: ``-(1 - unique / total)``; 0 for replies shorter than n."""
    if n < 1:
        raise ValueError(f"the repetition reward needs n >= 1, got {n}")

    def repetition(prompts: Sequence[str], completions: Sequence[str], completion_ids: Sequence[Sequence[int]], **_):
        out = []
        for ids in completion_ids:
            grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
            out.append(-(1.0 - len(set(grams)) / len(grams)) if grams else 0.0)
        return out

    return repetition


def load_reward_fn(name: str) -> RewardFn:
    """``module:function`` or ``file.py:function`` -> the function (clear errors for every way it can fail)."""
    module_name, sep, attr = name.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"reward {name!r}: expected one of {', '.join(BUILTIN_REWARDS)} or MODULE:FUNCTION / FILE.py:FUNCTION"
        )
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ValueError(f"reward {name!r}: file {path} not found")
        spec = importlib.util.spec_from_file_location(f"weakwater_reward_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ValueError(f"reward {name!r}: cannot import module {module_name!r} ({e})") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"reward {name!r}: {module_name} has no function {attr!r}")
    return fn


@dataclass
class Reward:
    name: str
    fn: RewardFn
    weight: float


def parse_rewards(specs: Sequence[str], length_limit: int = 256, repetition_n: int = 4) -> list[Reward]:
    """``["math", "format=0.2", "my_mod:fn=0.5"]`` -> rewards; a missing weight is 1."""
    out = []
    for spec in specs:
        name, sep, weight_text = spec.strip().rpartition("=")
        if not sep:
            name, weight_text = spec.strip(), "1"
        try:
            weight = float(weight_text)
        except ValueError:
            raise ValueError(f"reward {spec!r}: the weight after '=' must be a number") from None
        if name == "math":
            fn: RewardFn = math_reward
        elif name == "format":
            fn = format_reward
        elif name == "length":
            fn = length_reward(length_limit)
        elif name == "repetition":
            fn = repetition_reward(repetition_n)
        else:
            fn = load_reward_fn(name)
        if any(r.name == name for r in out):
            raise ValueError(f"reward {name!r} is listed twice")
        out.append(Reward(name, fn, weight))
    if not out:
        raise ValueError("at least one reward function is needed, e.g. --reward math,format=0.2")
    return out


def score(
    rewards: Sequence[Reward], prompts: Sequence[str], completions: Sequence[str], **kwargs: Any
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(weighted sum per completion, {name: per-completion values with NaN where a function returned None})."""
    n = len(completions)
    total = torch.zeros(n, dtype=torch.float64)
    parts: dict[str, torch.Tensor] = {}
    for r in rewards:
        values = r.fn(list(prompts), list(completions), **kwargs)
        if not isinstance(values, (list, tuple)) or len(values) != n:
            got = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
            raise ValueError(f"reward {r.name!r} returned {got} values for {n} completions (expected a list)")
        try:
            column = torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float64)
        except (TypeError, ValueError):
            raise ValueError(f"reward {r.name!r} returned a value that is not a number or None") from None
        parts[r.name] = column
        total += r.weight * torch.where(column.isnan(), 0.0, column)
    return total, parts
