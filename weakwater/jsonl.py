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


# What to do about each kind of skipped line: shown under the counts, so a lenient run that dropped
# most of a file says how to fix it instead of only how many.
HINTS = {
    "invalid_json": "JSONL is one JSON object per line; a file holding one JSON array (or pretty-printed "
    'objects) must be rewritten, e.g. python -c "import json,sys; [print(json.dumps(r, ensure_ascii=False)) '
    "for r in json.load(open(sys.argv[1], encoding='utf-8'))]\" in.json > out.jsonl",
    "invalid_utf8": "the file is not UTF-8 (GBK/GB18030 is common for Chinese data): re-encode it, e.g. "
    "iconv -f GB18030 -t UTF-8 in.jsonl > out.jsonl",
    "missing_field": "the lines lack the field this command reads: name the right one (--text-field or "
    "--field for text, --data-format for chats) or convert the file (weakwater convert-chat)",
    "not_object": "every line must be one JSON object {...}, not a list, string or number",
    "line_too_long": f"lines over {MAX_LINE_BYTES} bytes are skipped: split such documents",
}
EXAMPLES = 3  # locations (with their messages) kept per reason


class SkipCounter:
    """Counts skipped records by reason and keeps the first few (location and message) of each."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, where: str, n: int = 1, message: str | None = None) -> None:
        """Count ``n`` records skipped for ``reason``; ``message`` (the error, naming the field) defaults
        to ``where`` (``file:line``)."""
        self.counts[reason] += n
        self.first.setdefault(reason, where)
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES:
            examples.append(message or where)

    def merge(self, other: SkipCounter) -> None:
        for reason, n in other.counts.items():
            self.counts[reason] += n
            self.first.setdefault(reason, other.first[reason])
            mine = self.examples.setdefault(reason, [])
            mine += other.examples.get(reason, [])[: EXAMPLES - len(mine)]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_reason": dict(self.counts),
            "first_at": dict(self.first),
            "examples": {r: list(e) for r, e in self.examples.items()},
        }

    def summary(self) -> str:
        return describe_skips(self.as_dict())


def describe_skips(skipped: dict[str, Any]) -> str:
    """``SkipCounter.as_dict()`` (also as stored in meta.json) as text: one line per reason with its first
    few lines and what to do. ``skipped 0 records`` when nothing was skipped."""
    counts = skipped.get("by_reason") or {}
    if not counts:
        return "skipped 0 records"
    lines = [f"skipped {skipped.get('total', sum(counts.values()))} records:"]
    for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        examples = skipped.get("examples", {}).get(reason) or [skipped.get("first_at", {}).get(reason, "?")]
        lines.append(f"  {reason} x{n}, first: " + "; ".join(examples))
        if reason in HINTS:
            lines.append(f"    what to do: {HINTS[reason]}")
    return "\n".join(lines)


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
                skipped.add(e.reason, f"{path}:{line_no}", message=e.message)


def get_text(obj: dict[str, Any], field: str, where: str) -> str:
    """The string in ``obj[field]``, or a ``DataError`` naming the field (missing or wrong type)."""
    if field not in obj:
        keys = ", ".join(list(obj)[:8]) or "none"
        raise DataError(f"{where}: missing field '{field}' (the line has: {keys})", "missing_field")
    value = obj[field]
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{field}' must be a string, got {type(value).__name__}", "wrong_type")
    return value
