"""Over-long chat samples: the one truncation policy, its counters, and the check before training.

Policy (counted, never silent): a sample longer than the window keeps its first ``max_len`` tokens when
that window still contains a supervised token (``truncated_head``); otherwise (a prompt longer than the
window) it keeps the last ``max_len`` tokens, which end with the final assistant turn (``truncated_tail``).

A head cut loses the end of the answer: the closing ``<|im_end|>`` (and for R1 data ``</answer>``), so
the model learns answers that never end. :func:`check_lengths` therefore measures every sample (or a
seeded random subset of a big file) *before the first step*, prints the length distribution and how many
samples lose their supervised end, suggests a ``--max-seq-len``, and refuses to train when most samples
would lose it unless the user says ``--allow-truncation``.

``max_len`` counts the tokens of a sample including the one shifted off for targets: ``--seq-len 256``
trains on samples of up to 257 tokens (256 inputs, each predicting the next token).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

HEAD, TAIL = "truncated_head", "truncated_tail"
MEASURE_AT_MOST = 1000  # samples tokenised by the check; bigger files are estimated from a random subset
ROUND_TO = 64  # suggested lengths are multiples of this


class TruncationError(ValueError):
    """Most samples would lose the end of their answer; the message says what to change."""


def fit_window(ids: list[int], mask: list[bool], max_len: int) -> tuple[list[int], list[bool], str]:
    """Apply the truncation policy; returns the window and ``""``, ``"truncated_head"`` or ``"truncated_tail"``."""
    if len(ids) <= max_len:
        return ids, mask, ""
    if any(mask[1:max_len]):  # position 0 is never a target, so it cannot carry the loss
        return ids[:max_len], mask[:max_len], HEAD
    return ids[-max_len:], mask[-max_len:], TAIL


def loses_end(mask: Sequence[bool], max_len: int) -> bool:
    """Whether the policy cuts off the last supervised token (the end of the answer)."""
    if len(mask) <= max_len:
        return False
    last = max(i for i, m in enumerate(mask) if m) if any(mask) else -1
    return any(mask[1:max_len]) and last >= max_len


class TruncationCounter:
    """What the policy did to each sequence seen so far (keyed by sample, or by sample and side)."""

    def __init__(self) -> None:
        self._how: dict[Hashable, str] = {}

    def record(self, key: Hashable, how: str) -> None:
        if how:
            self._how[key] = how

    def stats(self) -> dict[str, int]:
        counts = Counter(self._how.values())
        return {HEAD: counts[HEAD], TAIL: counts[TAIL]}


@dataclass
class LengthReport:
    """Token lengths of the measured sequences and what the window does to them."""

    what: str  # "conversations", "pair sides"
    total: int  # sequences in the dataset
    lengths: np.ndarray  # of the measured sequences
    lost_end: int  # measured sequences whose supervised end is cut off
    tail_kept: int  # measured sequences that keep only their tail (prompt longer than the window)
    max_len: int
    setting: str = ""  # the flag that set the window, e.g. "--max-seq-len 512" (default: --seq-len)

    @property
    def flag(self) -> str:
        return self.setting or f"--seq-len {self.max_len - 1}"

    @property
    def measured(self) -> int:
        return len(self.lengths)

    @property
    def cut(self) -> int:
        return int((self.lengths > self.max_len).sum())

    @property
    def lost_share(self) -> float:
        return self.lost_end / max(1, self.measured)

    def suggestion(self, share: float = 1.0) -> int:
        """The ``--max-seq-len`` (positions, multiple of 64) that keeps ``share`` of the sequences whole."""
        need = float(np.quantile(self.lengths, share, method="higher")) - 1
        return int(math.ceil(max(need, 1) / ROUND_TO) * ROUND_TO)

    def lines(self) -> list[str]:
        p = np.percentile(self.lengths, [50, 90, 99]).round().astype(int)
        basis = f"{self.measured}" if self.measured == self.total else f"{self.measured} random of {self.total}"
        out = [
            f"lengths of {basis} {self.what} (tokens): median {p[0]}, p90 {p[1]}, p99 {p[2]}, "
            f"max {int(self.lengths.max())}"
        ]
        if not self.cut:
            out.append(f"all fit {self.flag} (up to {self.max_len} tokens: each input predicts the next token)")
            return out
        pct = 100 * self.cut / self.measured
        out.append(
            f"{self.cut} of {self.measured} ({pct:.0f}%) exceed {self.flag} ({self.max_len} tokens) and are cut: "
            f"{self.lost_end} lose the end of their answer (closing <|im_end|>, or </answer> for R1 data), "
            f"{self.tail_kept} keep only their tail (the prompt is longer than the window)"
        )
        out.append(
            f"--max-seq-len {self.suggestion(1.0)} keeps every one whole, {self.suggestion(0.9)} keeps 90% "
            f"(more than the --init model's context needs --rope-scaling linear|yarn)"
        )
        return out


def measure(
    count: int, sequences: Callable[[int], list[tuple[list[int], list[bool]]]], max_len: int, what: str, seed: int = 0
) -> LengthReport:
    """Tokenise every sample (or a seeded random ``MEASURE_AT_MOST`` of them): ``sequences(i)`` returns
    the untruncated ``(ids, mask)`` of sample ``i`` (two for a preference pair)."""
    indices = list(range(count))
    if count > MEASURE_AT_MOST:
        indices = sorted(random.Random(seed).sample(indices, MEASURE_AT_MOST))
    lengths, lost, tail = [], 0, 0
    sides = 0
    for i in indices:
        for ids, mask in sequences(i):
            sides += 1
            lengths.append(len(ids))
            if loses_end(mask, max_len):
                lost += 1
            elif fit_window(ids, mask, max_len)[2] == TAIL:
                tail += 1
    per_sample = sides / max(1, len(indices))
    return LengthReport(what, round(count * per_sample), np.asarray(lengths), lost, tail, max_len)


def check_lengths(report: LengthReport, allow_truncation: bool, say: Callable[[str], None], name: str) -> None:
    """Print the report; raise :class:`TruncationError` when most sequences would lose their answer's end
    and ``allow_truncation`` is off."""
    for line in report.lines():
        say(f"{name}: {line}")
    if report.lost_share > 0.5 and not allow_truncation:
        raise TruncationError(
            f"{name}: {report.lost_end} of {report.measured} {report.what} ({100 * report.lost_share:.0f}%) would "
            f"lose the end of their answer at {report.flag}, so the model would learn answers "
            f"that never end: pass --max-seq-len {report.suggestion(0.9)} (or more), or --allow-truncation to "
            f"train on the cut samples anyway"
        )
