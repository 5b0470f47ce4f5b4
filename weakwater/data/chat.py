"""Conversations: validation and converters from the chat formats users bring.

Everything downstream (SFT, distillation, DPO) works on one shape: a list of
``{"role": "system"|"user"|"assistant"|"tool", "content": str}`` dicts with an optional leading
system message, then a user turn, assistant turns answering it and ending the conversation.
Tool use (see "Tools" below) adds ``tools`` to the leading system message, ``tool_calls`` to
assistant turns and ``tool`` turns with the results. Input formats accepted (auto-detected per line):

- MiniMind ``{"conversations": [{"role", "content"}, ...]}`` (also ``"messages"``); MiniMind-3's
  ``reasoning_content`` on assistant turns becomes a ``<think>\\n...\\n</think>\\n`` prefix;
- ShareGPT / Infinity-Instruct ``{"conversations": [{"from": "human"|"gpt"|"system", "value"}]}``;
- Alpaca ``{"instruction", "input", "output"}`` (optional ``system`` and ``history`` pairs);
- question/answer CSV (e.g. Chinese medical dialogue data: ``ask``/``answer`` columns).

Tools, in both shapes users bring: OpenAI's (a record-level ``tools`` list of function schemas; assistant
``tool_calls`` ``[{"id", "type": "function", "function": {"name", "arguments": "<JSON string>"}}]``; ``tool``
turns with ``tool_call_id``) and MiniMind-3's (``tools`` on the system message as a list or a JSON string,
``tool_calls`` a JSON string of ``[{"name", "arguments": {...}}]``). Both become one normal form: the tools
(``{"type": "function", "function": {...}}`` each) on the leading system message (one with empty content is
added when there is none; the template then writes only the tools), and each call
``{"type": "function", "function": {"name", "arguments": {...}}}`` (plus its ``id`` if given) with the arguments
parsed, so every call renders as the same canonical JSON whatever spacing the data had.

A malformed conversation raises :class:`ConversationError` naming the offending field (an unknown tool name,
arguments that are not a JSON object, a tool turn with no call before it, ...); callers add the file and line
(see :func:`read_conversations`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from weakwater.jsonl import DataError, SkipCounter, read_jsonl

Message = dict[str, Any]

ROLES = ("system", "user", "assistant", "tool")
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


def _json_field(value: Any, field: str, kinds: tuple[type, ...], what: str) -> Any:
    """``value``, or the JSON it holds when it is a string (MiniMind-3 stores tools and calls as JSON text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ConversationError(field, f"not valid JSON ({e.msg} at char {e.pos})", "invalid_json_field") from e
    if not isinstance(value, kinds):
        raise ConversationError(field, f"expected {what}, got {type(value).__name__}", "wrong_type")
    return value


def normalize_tools(value: Any, field: str = "tools") -> list[dict[str, Any]]:
    """Function schemas as ``{"type": "function", "function": {"name", ...}}`` (a bare ``{"name", ...}`` is wrapped)."""
    tools = []
    for i, tool in enumerate(_json_field(value, field, (list,), "a list of tools")):
        where = f"{field}[{i}]"
        if not isinstance(tool, dict):
            raise ConversationError(where, f"expected an object, got {type(tool).__name__}", "wrong_type")
        function = tool.get("function", tool) if tool.get("type", "function") == "function" else None
        if not isinstance(function, dict):
            raise ConversationError(where, 'expected {"type": "function", "function": {...}}', "wrong_type")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise ConversationError(f"{where}.function.name", "missing or not a string", "missing_field")
        tools.append({"type": "function", "function": function})
    return tools


def normalize_tool_calls(value: Any, field: str) -> list[dict[str, Any]]:
    """Calls as ``{"type": "function", "function": {"name", "arguments": {...}}}`` (+ ``id``), arguments parsed."""
    calls = []
    for i, call in enumerate(_json_field(value, field, (list,), "a list of tool calls")):
        where = f"{field}[{i}]"
        if not isinstance(call, dict):
            raise ConversationError(where, f"expected an object, got {type(call).__name__}", "wrong_type")
        function = call["function"] if isinstance(call.get("function"), dict) else call
        fwhere = f"{where}.function" if function is not call else where
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise ConversationError(f"{fwhere}.name", "missing or not a string", "missing_field")
        arguments = function.get("arguments", {})
        arguments = _json_field(arguments, f"{fwhere}.arguments", (dict,), "a JSON object of arguments")
        out: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
        if call.get("id") is not None:
            out = {"id": _text(call["id"], f"{where}.id"), **out}
        calls.append(out)
    return calls


def _from_role_content(turns: Any, key: str) -> list[Message]:
    """MiniMind / OpenAI style turns (tools, calls and tool turns included); ``reasoning_content`` folds into
    think tags."""
    out: list[Message] = []
    for where, turn in _turns(turns, key):
        if "role" not in turn:
            raise ConversationError(f"{where}.role", "missing", "missing_field")
        role = _text(turn["role"], f"{where}.role")
        content = turn.get("content", "")
        # An assistant turn that only calls tools has null content in OpenAI's format.
        content = "" if content is None and role == "assistant" else _text(content, f"{where}.content")
        reasoning = turn.get("reasoning_content")
        if reasoning and role == "assistant":
            content = f"<think>\n{_text(reasoning, f'{where}.reasoning_content').strip()}\n</think>\n{content}"
        message: Message = {"role": role, "content": content}
        if turn.get("tools") and role == "system":
            message["tools"] = normalize_tools(turn["tools"], f"{where}.tools")
        if turn.get("tool_calls") and role == "assistant":
            message["tool_calls"] = normalize_tool_calls(turn["tool_calls"], f"{where}.tool_calls")
        if role == "tool" and turn.get("tool_call_id") is not None:
            message["tool_call_id"] = _text(turn["tool_call_id"], f"{where}.tool_call_id")
        out.append(message)
    return out


def attach_tools(messages: list[Message], tools: list[dict[str, Any]] | None) -> list[Message]:
    """The normal form: record-level ``tools`` (OpenAI's shape) go on the leading system message, which is
    added with empty content when the conversation has none."""
    if not tools:
        return messages
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "tools": messages[0].get("tools", []) + tools}, *messages[1:]]
    return [{"role": "system", "content": "", "tools": tools}, *messages]


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


def to_messages(record: Any, fmt: str = "auto", prompt: bool = False) -> list[Message]:
    """Convert one record of any supported format and validate it (see :func:`validate`).

    ``prompt``: the conversation is a prompt to answer (it need not end with an assistant turn).
    """
    if not isinstance(record, dict):
        raise ConversationError("<line>", f"expected a JSON object, got {type(record).__name__}", "not_object")
    fmt = detect_format(record) if fmt == "auto" else fmt
    key = "messages" if "messages" in record and "conversations" not in record else "conversations"
    tools = normalize_tools(record["tools"]) if record.get("tools") else None
    if fmt == "messages":
        messages = _from_role_content(record.get(key), key)
    elif fmt == "sharegpt":
        messages = _from_sharegpt(record.get(key), key)
    elif fmt == "alpaca":
        messages = _from_alpaca(record)
    else:
        raise ValueError(f"unknown chat format {fmt!r}; choose auto, messages, sharegpt or alpaca")
    messages = validate(messages, key if fmt != "alpaca" else "output", prompt=prompt, tools=tools)
    return attach_tools(messages, tools)


def validate(
    messages: list[Message], key: str = "conversations", prompt: bool = False, tools: list[dict] | None = None
) -> list[Message]:
    """Check roles and turn order; returns the messages with trailing non-assistant turns dropped.

    Rules: roles in ``ROLES``; at most one system message, first; then a user turn; after a user turn an
    assistant turn; after an assistant turn a user turn or another assistant turn (MiniMind-3's data has
    some), and after one that calls tools the ``tool`` turns answering its calls, then an assistant turn.
    A call must name a tool the conversation declares; a tool turn's ``tool_call_id``, when both sides
    have ids, must name one of the calls. At least one assistant turn with text or calls. Consecutive user
    turns are rejected rather than merged: merging would invent a turn boundary the data never had.

    ``prompt``: a conversation to be answered; it keeps its trailing turns and needs no assistant turn.
    ``tools``: the conversation's tools when they are not (yet) on its system message.
    """
    if not messages:
        raise ConversationError(key, "empty conversation", "empty_conversation")
    tools = (tools or []) + (messages[0].get("tools") or [] if messages[0]["role"] == "system" else [])
    names = {t["function"]["name"] for t in tools}
    expected: tuple[str, ...] = ("user",)
    pending: list[dict[str, Any]] = []  # calls of the last assistant turn not yet answered by a tool turn
    for i, msg in enumerate(messages):
        role, where = msg["role"], f"{key}[{i}]"
        if role not in ROLES:
            raise ConversationError(
                f"{where}.role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})", "unknown_role"
            )
        if role == "system":
            if i != 0:
                raise ConversationError(f"{where}.role", "system message must come first", "turn_order")
            continue
        if role == "tool" and "tool" not in expected:
            raise ConversationError(
                f"{where}.role", "tool turn with no assistant tool call before it", "tool_without_call"
            )
        if role not in expected:
            same = i > 0 and messages[i - 1]["role"] == role
            what = "consecutive same-role turns" if same else "turn order"
            if "tool" in expected:
                what = f"{len(pending)} tool call(s) of {key}[{i - 1}] not answered"
            raise ConversationError(
                f"{where}.role",
                f"{what}: expected {' or '.join(map(repr, expected))}, got {role!r}",
                "same_role_turns" if same else "turn_order",
            )
        if role == "assistant":
            for j, call in enumerate(msg.get("tool_calls") or []):
                name = call["function"]["name"]
                if name not in names:
                    known = f"the tools are {', '.join(sorted(names))}" if names else "the conversation declares none"
                    raise ConversationError(
                        f"{where}.tool_calls[{j}].function.name", f"unknown tool {name!r} ({known})", "unknown_tool"
                    )
            pending = list(msg.get("tool_calls") or [])
        elif role == "tool":
            ids = [c["id"] for c in pending if "id" in c]
            call_id = msg.get("tool_call_id")
            if call_id is not None and ids and call_id not in ids:
                raise ConversationError(
                    f"{where}.tool_call_id", f"{call_id!r} names none of the pending calls {ids}", "unknown_tool_call"
                )
            pending.remove(next((c for c in pending if c.get("id") == call_id), pending[0]))
        if role == "user":
            expected = ("assistant",)
        elif pending:
            expected = ("tool",)
        else:
            expected = ("assistant",) if role == "tool" else ("user", "assistant")
    if prompt:
        return messages
    while messages and messages[-1]["role"] != "assistant":
        messages = messages[:-1]
    if not any(m["role"] == "assistant" and (m["content"].strip() or m.get("tool_calls")) for m in messages):
        raise ConversationError(key, "no non-empty assistant turn", "no_assistant_turn")
    return messages


def prompt_record(record: Any) -> tuple[list[Message], Any]:
    """An RL prompt row: (the conversation to answer, its ``gt`` field or None).

    MiniMind's RL files (``rlaif.jsonl``, MiniMind-3's ``agent_rl.jsonl`` / ``agent_rl_math.jsonl``) store each
    prompt as a conversation whose last turn is a placeholder assistant reply (``"空"``, or empty), which their
    trainers drop; so do we. ``agent_rl`` rows carry the tools on the system message and the expected values in
    ``gt``.
    """
    if not isinstance(record, dict):
        raise ConversationError("<line>", f"expected a JSON object, got {type(record).__name__}", "not_object")
    key = "messages" if "messages" in record and "conversations" not in record else "conversations"
    tools = normalize_tools(record["tools"]) if record.get("tools") else None
    messages = _from_role_content(record.get(key), key)
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    messages = validate(messages, key, prompt=True, tools=tools)
    if messages[-1]["role"] not in ("user", "tool"):
        raise ConversationError(key, "a prompt must end with a user or tool turn", "turn_order")
    return attach_tools(messages, tools), record.get("gt")


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
