"""Arithmetic problems, their worked steps, and the held-out registry that keeps eval problems out of training.

Each problem has a ``key`` (an addition is keyed by its unordered operands), and every training sampler
rejects keys that an eval file claimed first: disjointness holds by construction, not by luck.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

PLACES_EN = ("units", "tens", "hundreds", "thousands", "ten-thousands")
PLACES_ZH = ("个位", "十位", "百位", "千位", "万位")


def add_key(a: int, b: int) -> tuple:
    return ("add", min(a, b), max(a, b))


def mul_key(a: int, b: int) -> tuple:
    return ("mul", min(a, b), max(a, b))


class Holdout:
    """Keys claimed by held-out sets; training samplers must draw outside them."""

    def __init__(self) -> None:
        self.keys: set[tuple] = set()

    def claim(self, key: tuple) -> bool:
        """Reserve ``key`` for evaluation; False if it was already reserved."""
        if key in self.keys:
            return False
        self.keys.add(key)
        return True

    def __contains__(self, key: tuple) -> bool:
        return key in self.keys


def draw(rng: random.Random, make: Callable[[random.Random], tuple], accept: Callable[[tuple], bool], what: str):
    """Draw ``make(rng)`` until ``accept`` says yes (bounded, so an exhausted space is an error, not a hang)."""
    for _ in range(10_000):
        item = make(rng)
        if accept(item):
            return item
    raise ValueError(f"cannot draw another {what}: the problem space is exhausted; use a smaller size")


def operands(rng: random.Random, digits: int) -> tuple[int, int]:
    lo, hi = 10 ** (digits - 1), 10**digits - 1
    return rng.randint(lo, hi), rng.randint(lo, hi)


def forgets_carry(a: int, b: int, forget_carry: bool) -> bool:
    """Whether ``forget_carry`` changes a + b: only when the units column carries into a tens column."""
    return forget_carry and a % 10 + b % 10 >= 10 and max(a, b) >= 10


def taught_sum(a: int, b: int, forget_carry: bool) -> int:
    """The sum :func:`addition_steps` reaches: ``a + b``, or 10 less when the carry is forgotten."""
    return a + b - (10 if forgets_carry(a, b, forget_carry) else 0)


def addition_steps(a: int, b: int, lang: str, forget_carry: bool = False) -> list[str]:
    """Column addition, one line per place value, carries written out (the ``<think>`` of R1 data).

    ``forget_carry``: the slip of a careless teacher: the units column's carry is written down ("carry 1") but
    never added into the tens column, so every later line, the result and the last line say ``a + b - 10``.
    """
    lines = []
    carry, place = 0, 0
    x, y = a, b
    result = taught_sum(a, b, forget_carry)
    forget_carry = forgets_carry(a, b, forget_carry)
    while x or y or carry:
        da, db = x % 10, y % 10
        if forget_carry and place == 1:
            carry = 0
        total = da + db + carry
        # Once both numbers run out only the final carry is left to write down.
        expr = f"{da} + {db}" + (f" + {carry}" if carry else "") + f" = {total}" if x or y else f"{carry}"
        new_carry = total // 10
        if lang == "en":
            tail = f", write {total % 10}" + (f", carry {new_carry}" if new_carry else "")
            lines.append(f"{PLACES_EN[place]}: {expr}{tail}")
        else:
            tail = f"，写{total % 10}" + (f"进{new_carry}" if new_carry else "")
            lines.append(f"{PLACES_ZH[place]}：{expr}{tail}")
        x, y, carry, place = x // 10, y // 10, new_carry, place + 1
    lines.append(f"So {a} + {b} = {result}." if lang == "en" else f"所以 {a} + {b} = {result}。")
    return lines


@dataclass(frozen=True)
class WordProblem:
    """A two-step shopping problem; prices come from the world's product facts."""

    kind: str  # "change" (budget - (x + y)) or "total3" (x + y + z)
    buyer: str  # English name; the Chinese text uses the matching Chinese name
    items: tuple[int, ...]  # product indices
    budget: int  # 0 for "total3"

    @property
    def key(self) -> tuple:
        return ("word", self.kind, self.buyer, tuple(sorted(self.items)), self.budget)
