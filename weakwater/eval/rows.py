"""Reading eval files row by row: a malformed row is reported with its file and line, fatal only when strict."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from weakwater.jsonl import DataError, iter_raw_lines, parse_line

T = TypeVar("T")


def read_rows(
    path: str | Path, parse: Callable[[dict[str, Any], str], T], strict: bool = False
) -> tuple[list[T], list[str]]:
    """``parse(row, where)`` for every JSONL row of ``path``; returns the parsed items and one
    ``"file:line: what is wrong"`` message per malformed row. ``parse`` raises ``DataError``/``ValueError`` for a
    bad row; with ``strict`` the first bad row raises instead of being reported. An empty result raises."""
    items: list[T] = []
    malformed: list[str] = []
    for line_no, raw in iter_raw_lines(path):
        where = f"{path}:{line_no}"
        try:
            items.append(parse(parse_line(raw, where), where))
        except (DataError, ValueError) as e:
            message = str(e) if str(e).startswith(where) else f"{where}: {e}"
            if strict:
                raise DataError(message) from None
            malformed.append(message)
    if not items:
        detail = f" ({len(malformed)} malformed, first: {malformed[0]})" if malformed else ""
        raise DataError(f"{path}: no usable rows{detail}")
    return items, malformed


def field(row: dict[str, Any], names: tuple[str, ...], where: str, kinds: tuple[type, ...] = (str,)) -> Any:
    """The first of ``names`` present in ``row`` (of one of ``kinds``), or a ``DataError`` naming them."""
    for name in names:
        if name in row:
            value = row[name]
            if (
                not isinstance(value, kinds)
                or isinstance(value, bool)
                or (isinstance(value, str) and not value.strip())
            ):
                raise DataError(f"{where}: field '{name}' must be a non-empty {'/'.join(k.__name__ for k in kinds)}")
            return value
    raise DataError(f"{where}: missing field {' or '.join(repr(n) for n in names)}")
