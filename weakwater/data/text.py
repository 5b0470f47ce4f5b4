"""The text of JSONL rows of any format we accept, for every command that needs only text: tokenizer
training and statistics (:mod:`weakwater.tokenizer.train`, which takes texts and reads no files) and
perplexity (:mod:`weakwater.eval.ppl`).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from weakwater.data.chat import ConversationError, to_messages
from weakwater.jsonl import DataError, SkipCounter, get_text, iter_raw_lines, parse_line

_SCALE = 1_000_000


def record_text(obj: dict[str, Any], field: str = "text", where: str = "") -> str:
    """The text of one JSONL row of any format we accept, for every command that only needs text
    (tokenizer training and stats, perplexity): the ``field`` string of a pretraining row; the message
    contents of a chat row (MiniMind, ShareGPT, Alpaca), joined by newlines; for a preference pair the
    chosen conversation followed by the rejected reply. Raises :class:`DataError` naming the field."""
    if field in obj:
        return get_text(obj, field, where)
    try:
        if "chosen" in obj and "rejected" in obj:
            chosen = to_messages({"conversations": obj["chosen"]})
            rejected = to_messages({"conversations": obj["rejected"]})
            messages = [*chosen, rejected[-1]]
        else:
            messages = to_messages(obj)
    except ConversationError as e:
        if e.key == "missing_field" and e.field == "conversations":
            keys = ", ".join(list(obj)[:8]) or "none"
            raise DataError(
                f"{where}: no text: missing field '{field}' (or conversations/messages, instruction/output, "
                f"chosen/rejected; the line has: {keys})",
                "missing_field",
            ) from None
        raise DataError(f"{where}: {e}", e.key) from None
    return "\n".join(m["content"] for m in messages if m["content"])


def is_heldout(line_no: int, frac: float) -> bool:
    """Deterministic line-level split shared by ``tokenizer train --heldout-frac`` and ``stats --heldout-frac``."""
    return frac > 0 and zlib.crc32(f"line:{line_no}".encode()) % _SCALE < frac * _SCALE


def iter_texts(
    paths: Sequence[str | Path],
    field: str = "text",
    max_bytes: int | None = None,
    seed: int = 0,
    heldout_frac: float = 0.0,
    heldout: bool = False,
    skipped: SkipCounter | None = None,
) -> Iterator[str]:
    """Stream the texts of JSONL files (:func:`record_text` of each row); unusable or empty rows are counted
    in ``skipped``.

    max_bytes: keep each line with probability ``max_bytes / total file bytes`` (decided before parsing, so
      skipped lines cost only the read) and stop once ``max_bytes`` of text were yielded.
    heldout_frac/heldout: yield only the training lines (``heldout=False``) or only the held-out ones.
    """
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"data file not found: {p}")
    total = sum(p.stat().st_size for p in paths)
    keep = 1.0 if not max_bytes or total <= max_bytes else max_bytes / total
    rng = random.Random(seed)
    emitted = 0
    for path in paths:
        for line_no, raw in iter_raw_lines(path):
            if keep < 1.0 and rng.random() >= keep:
                continue
            if is_heldout(line_no, heldout_frac) != heldout:
                continue
            where = f"{path}:{line_no}"
            try:
                text = record_text(parse_line(raw, where), field, where)
            except DataError as e:
                if skipped is not None:
                    skipped.add(e.reason, where, message=e.message)
                continue
            if not text:
                if skipped is not None:
                    skipped.add("empty_text", where, message=f"{where}: empty text")
                continue
            yield text
            emitted += len(text.encode("utf-8"))
            if max_bytes and emitted >= max_bytes:
                return
