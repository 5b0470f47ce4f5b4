"""Robust JSONL reading: every malformed line either raises a clear ``DataError`` (strict) or is counted.

Real corpora contain BOMs, CRLF line ends, invalid UTF-8, truncated JSON, non-object lines and occasional
multi-megabyte lines. One bad line must never crash a long run, and must never be silently dropped either:
lenient readers record the reason in a ``SkipCounter`` that ends up in the run summary.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Lines longer than this are skipped (or rejected in strict mode) without ever being held in memory whole.
MAX_LINE_BYTES = 32 * 1024 * 1024
_READ_CHUNK = 1024 * 1024


class DataError(ValueError):
    """A malformed input record; the message names file, line and (when relevant) field.

    ``reason`` is a short machine-readable key (``invalid_json``, ``missing_field``...) for skip counters.
    """

    def __init__(self, message: str, reason: str = "invalid"):
        super().__init__(message, reason)  # both in args so the error survives pickling across processes
        self.message = message
        self.reason = reason

    def __str__(self) -> str:
        return self.message


class SkipCounter:
    """Counts skipped records by reason and remembers the first location of each, for run summaries."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}

    def add(self, reason: str, where: str, n: int = 1) -> None:
        self.counts[reason] += n
        self.first.setdefault(reason, where)

    def merge(self, other: SkipCounter) -> None:
        for reason, n in other.counts.items():
            self.add(reason, other.first[reason], n)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_reason": dict(self.counts), "first_at": dict(self.first)}

    def summary(self) -> str:
        if not self.counts:
            return "skipped 0 records"
        parts = ", ".join(f"{r}={n} (first at {self.first[r]})" for r, n in self.counts.most_common())
        return f"skipped {self.total} records: {parts}"


def iter_raw_lines(path: str | Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | None]]:
    """Yield ``(line_no, raw_bytes)`` (1-based), or ``(line_no, None)`` for a line longer than the cap.

    Reads in bounded pieces, so a gigantic line without newlines cannot exhaust memory. Blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    with path.open("rb") as f:
        line_no = 0
        while True:
            line = f.readline(max_line_bytes + 1)
            if not line:
                return
            line_no += 1
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):  # discard the rest of the oversized line
                    line = f.readline(_READ_CHUNK)
                yield line_no, None
                continue
            if line_no == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line_no, line


def parse_line(raw: bytes | None, where: str) -> dict[str, Any]:
    """Decode one raw line into a JSON object or raise ``DataError`` saying what is wrong at ``where``."""
    if raw is None:
        raise DataError(f"{where}: line longer than {MAX_LINE_BYTES} bytes", "line_too_long")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: invalid UTF-8 at byte {e.start}", "invalid_utf8") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})", "invalid_json") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}", "not_object")
    return obj


def read_jsonl(
    path: str | Path,
    strict: bool = False,
    skipped: SkipCounter | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_no, object)`` for each valid line of a JSONL file.

    strict: raise ``DataError`` at the first malformed line; otherwise skip it and count it in ``skipped``.
    """
    for line_no, raw in iter_raw_lines(path, max_line_bytes):
        try:
            yield line_no, parse_line(raw, f"{path}:{line_no}")
        except DataError as e:
            if strict:
                raise
            if skipped is not None:
                skipped.add(e.reason, f"{path}:{line_no}")


def get_text(obj: dict[str, Any], field: str, where: str) -> str:
    """The string in ``obj[field]``, or a ``DataError`` naming the field (missing or wrong type)."""
    if field not in obj:
        raise DataError(f"{where}: missing field '{field}'", "missing_field")
    value = obj[field]
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{field}' must be a string, got {type(value).__name__}", "wrong_type")
    return value


def record_text(obj: dict[str, Any], field: str, where: str) -> str:
    """Text of a pretraining row (``field``) or of a chat row (``conversations``/``messages`` contents joined).

    Lets tokenizer training and statistics use SFT/R1 chat files as well as plain-text corpora.
    """
    if field in obj:
        return get_text(obj, field, where)
    for key in ("conversations", "messages"):
        turns = obj.get(key)
        if isinstance(turns, list):
            parts = [t.get("content") for t in turns if isinstance(t, dict)]
            texts = [p for p in parts if isinstance(p, str)]
            if not texts:
                raise DataError(f"{where}: field '{key}' has no string 'content'", "empty_conversation")
            return "\n".join(texts)
    return get_text(obj, field, where)  # raises the missing-field error
