"""Conversations: validation and converters from the chat formats users bring.

Everything downstream (SFT, distillation, DPO) works on one shape: a list of
``{"role": "system"|"user"|"assistant", "content": str}`` dicts with an optional leading
system message, then alternating user/assistant turns ending in an assistant turn. Input
formats accepted (auto-detected per line):

- MiniMind ``{"conversations": [{"role", "content"}, ...]}`` (also ``"messages"``); MiniMind-3's
  ``reasoning_content`` on assistant turns becomes a ``<think>\\n...\\n</think>\\n`` prefix;
- ShareGPT / Infinity-Instruct ``{"conversations": [{"from": "human"|"gpt"|"system", "value"}]}``;
- Alpaca ``{"instruction", "input", "output"}`` (optional ``system`` and ``history`` pairs);
- question/answer CSV (e.g. Chinese medical dialogue data: ``ask``/``answer`` columns).

A malformed conversation raises :class:`ConversationError` naming the offending field; callers add
the file and line (see :func:`read_conversations`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from weakwater.data.jsonl import DataError, SkipCounter, get_text, read_jsonl

Message = dict[str, str]

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bot": "assistant",
}
QUESTION_COLUMNS = ("question", "ask", "instruction", "prompt", "input", "问题", "提问")
ANSWER_COLUMNS = ("answer", "response", "output", "回答", "答案")


class ConversationError(ValueError):
    """A conversation that cannot be trained on; ``field`` says where in the record, ``key`` why (for counters)."""

    def __init__(self, field: str, reason: str, key: str = "invalid_conversation") -> None:
        super().__init__(f"field {field}: {reason}")
        self.field = field
        self.reason = reason
        self.key = key


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ConversationError(field, f"expected a string, got {type(value).__name__}", "wrong_type")
    return value


def _turns(turns: Any, key: str) -> list[tuple[str, dict]]:
    """(field path, turn) pairs of a list of message objects, or an error naming the bad field."""
    if not isinstance(turns, list):
        raise ConversationError(key, f"expected a list of messages, got {type(turns).__name__}", "wrong_type")
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise ConversationError(f"{key}[{i}]", f"expected an object, got {type(turn).__name__}", "wrong_type")
    return [(f"{key}[{i}]", turn) for i, turn in enumerate(turns)]


def _from_role_content(turns: Any, key: str) -> list[Message]:
    """MiniMind / OpenAI style turns; ``reasoning_content`` folds into think tags."""
    out = []
    for where, turn in _turns(turns, key):
        if "role" not in turn:
            raise ConversationError(f"{where}.role", "missing", "missing_field")
        role = _text(turn["role"], f"{where}.role")
        content = _text(turn.get("content", ""), f"{where}.content")
        reasoning = turn.get("reasoning_content")
        if reasoning and role == "assistant":
            content = f"<think>\n{_text(reasoning, f'{where}.reasoning_content').strip()}\n</think>\n{content}"
        out.append({"role": role, "content": content})
    return out


def _from_sharegpt(turns: Any, key: str) -> list[Message]:
    out = []
    for where, turn in _turns(turns, key):
        speaker = _text(turn.get("from"), f"{where}.from")
        if speaker.lower() not in SHAREGPT_ROLES:
            raise ConversationError(f"{where}.from", f"unknown speaker {speaker!r}", "unknown_role")
        out.append({"role": SHAREGPT_ROLES[speaker.lower()], "content": _text(turn.get("value"), f"{where}.value")})
    return out


def _from_alpaca(record: dict[str, Any]) -> list[Message]:
    out: list[Message] = []
    if record.get("system"):
        out.append({"role": "system", "content": _text(record["system"], "system")})
    history = record.get("history") or []
    if not isinstance(history, list):
        raise ConversationError("history", "expected a list of [question, answer] pairs", "wrong_type")
    for i, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ConversationError(f"history[{i}]", "expected a [question, answer] pair", "wrong_type")
        out += [
            {"role": "user", "content": _text(pair[0], f"history[{i}][0]")},
            {"role": "assistant", "content": _text(pair[1], f"history[{i}][1]")},
        ]
    prompt = _text(record["instruction"], "instruction")
    extra = _text(record.get("input") or "", "input")
    if extra.strip():
        prompt = f"{prompt}\n\n{extra}" if prompt.strip() else extra
    out += [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": _text(record.get("output"), "output")},
    ]
    return out


def detect_format(record: dict[str, Any]) -> str:
    """``"messages"``, ``"sharegpt"`` or ``"alpaca"``, from the keys of one record."""
    for key in ("conversations", "messages"):
        turns = record.get(key)
        if isinstance(turns, list):
            first = next((t for t in turns if isinstance(t, dict)), {})
            return "sharegpt" if "from" in first or "value" in first else "messages"
        if key in record:
            return "messages"  # present but malformed: validation names the field
    if "instruction" in record:
        return "alpaca"
    keys = ", ".join(list(record)[:8]) or "none"
    raise ConversationError(
        "conversations",
        f"missing (expected conversations/messages, or instruction/output; the line has: {keys})",
        "missing_field",
    )


def to_messages(record: Any, fmt: str = "auto") -> list[Message]:
    """Convert one record of any supported format and validate it (see :func:`validate`)."""
    if not isinstance(record, dict):
        raise ConversationError("<line>", f"expected a JSON object, got {type(record).__name__}", "not_object")
    fmt = detect_format(record) if fmt == "auto" else fmt
    key = "messages" if "messages" in record and "conversations" not in record else "conversations"
    if fmt == "messages":
        messages = _from_role_content(record.get(key), key)
    elif fmt == "sharegpt":
        messages = _from_sharegpt(record.get(key), key)
    elif fmt == "alpaca":
        messages = _from_alpaca(record)
    else:
        raise ValueError(f"unknown chat format {fmt!r}; choose auto, messages, sharegpt or alpaca")
    return validate(messages, key if fmt != "alpaca" else "output")


def validate(messages: list[Message], key: str = "conversations") -> list[Message]:
    """Check roles and turn order; returns the messages with trailing non-assistant turns dropped.

    Rules: roles in ``ROLES``; at most one system message, first; then user/assistant strictly
    alternating starting with user; at least one non-empty assistant turn. Consecutive same-role
    turns are rejected rather than merged: merging would invent a turn boundary the data never had.
    """
    if not messages:
        raise ConversationError(key, "empty conversation", "empty_conversation")
    expected = "user"
    for i, msg in enumerate(messages):
        role = msg["role"]
        if role not in ROLES:
            raise ConversationError(
                f"{key}[{i}].role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})", "unknown_role"
            )
        if role == "system":
            if i != 0:
                raise ConversationError(f"{key}[{i}].role", "system message must come first", "turn_order")
            continue
        if role != expected:
            same = i > 0 and messages[i - 1]["role"] == role
            what = "consecutive same-role turns" if same else "turn order"
            raise ConversationError(
                f"{key}[{i}].role",
                f"{what}: expected {expected!r}, got {role!r}",
                "same_role_turns" if same else "turn_order",
            )
        expected = "assistant" if role == "user" else "user"
    while messages and messages[-1]["role"] != "assistant":
        messages = messages[:-1]
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise ConversationError(key, "no non-empty assistant turn", "no_assistant_turn")
    return messages


def read_conversations(
    path: str | Path, strict: bool = False, skipped: SkipCounter | None = None, fmt: str = "auto"
) -> Iterator[tuple[int, list[Message]]]:
    """(line number, messages) for each usable record of a JSONL or CSV file.

    ``strict``: the first bad record raises :class:`DataError` naming file, line and field;
    otherwise it is skipped and counted in ``skipped`` under its reason.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        yield from read_qa_csv(path, strict=strict, skipped=skipped)
        return
    for line_no, record in read_jsonl(path, strict=strict, skipped=skipped):
        try:
            yield line_no, to_messages(record, fmt)
        except ConversationError as e:
            if strict:
                raise DataError(f"{path}:{line_no}: {e}", e.key) from e
            if skipped is not None:
                skipped.add(e.key, f"{path}:{line_no}", message=f"{path}:{line_no}: {e}")


def read_qa_csv(
    path: str | Path, strict: bool = False, skipped: SkipCounter | None = None
) -> Iterator[tuple[int, list[Message]]]:
    """Question/answer CSV rows as single-turn conversations (column names detected from the header)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.DictReader(f)
        header = [h.strip().lower() for h in reader.fieldnames or []]
        q_col = next((c for c in QUESTION_COLUMNS if c in header), None)
        a_col = next((c for c in ANSWER_COLUMNS if c in header), None)
        if q_col is None or a_col is None:
            raise DataError(
                f"{path}:1: header needs a question column ({'/'.join(QUESTION_COLUMNS)}) and an "
                f"answer column ({'/'.join(ANSWER_COLUMNS)}), got {header}"
            )
        names = dict(zip(header, reader.fieldnames or []))
        for row_no, row in enumerate(reader, start=2):
            question, answer = (row.get(names[q_col]) or "").strip(), (row.get(names[a_col]) or "").strip()
            if not question or not answer:
                field = q_col if not question else a_col
                if strict:
                    raise DataError(f"{path}:{row_no}: field {field}: empty", "empty_field")
                if skipped is not None:
                    skipped.add("empty_field", f"{path}:{row_no}", message=f"{path}:{row_no}: field {field}: empty")
                continue
            yield row_no, [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def convert_file(src: str | Path, out: str | Path, strict: bool = False, fmt: str = "auto") -> tuple[int, SkipCounter]:
    """Write MiniMind-format JSONL (``{"conversations": [...]}``) from any supported input."""
    skipped = SkipCounter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("w", encoding="utf-8") as f:
        for _, messages in read_conversations(src, strict=strict, skipped=skipped, fmt=fmt):
            f.write(json.dumps({"conversations": messages}, ensure_ascii=False) + "\n")
            n += 1
    return n, skipped


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
