"""Conversation parsing: every supported format, and every hostile record named precisely or counted."""

from __future__ import annotations

import json

import pytest

from weakwater.data.chat import ConversationError, convert_file, prompt_record, read_conversations, to_messages
from weakwater.jsonl import DataError, SkipCounter

GOOD = {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def test_minimind_with_system_and_trailing_user_dropped():
    rec = {
        "conversations": [{"role": "system", "content": "s"}, *GOOD["conversations"], {"role": "user", "content": "?"}]
    }
    assert [m["role"] for m in to_messages(rec)] == ["system", "user", "assistant"]


def test_reasoning_content_becomes_think_tags():
    rec = {
        "conversations": [GOOD["conversations"][0], {"role": "assistant", "content": "4", "reasoning_content": "2+2"}]
    }
    assert to_messages(rec)[-1]["content"] == "<think>\n2+2\n</think>\n4"


def test_sharegpt_and_alpaca():
    share = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    assert to_messages(share) == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    alpaca = {"instruction": "Translate", "input": "猫", "output": "cat", "history": [["hi", "hello"]]}
    assert to_messages(alpaca) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "Translate\n\n猫"},
        {"role": "assistant", "content": "cat"},
    ]


CALC = {"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}


def test_openai_tool_shape_becomes_the_normal_form():
    record = {
        "messages": [
            {"role": "user", "content": "12 * 35?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": '{"e": "12*35"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "420"},
            {"role": "assistant", "content": "420."},
        ],
        "tools": [CALC],
    }  # fmt: skip
    messages = to_messages(record)
    assert messages[0] == {"role": "system", "content": "", "tools": [CALC]}
    assert messages[2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "calc", "arguments": {"e": "12*35"}}}],
    }
    assert messages[3] == {"role": "tool", "content": "420", "tool_call_id": "c1"}


def test_minimind3_tool_shape_is_read_as_it_is():
    """MiniMind-3 (README's sample row): tools on the system message and calls as JSON strings."""
    tools = '[{"type": "function", "function": {"name": "translate_text", "parameters": {}}}]'
    calls = '[{"name":"translate_text","arguments":{"text":"你好世界","target_language":"english"}}]'
    record = {
        "conversations": [
            {"role": "system", "content": "# Tools ...", "tools": tools},
            {"role": "user", "content": "把'你好世界'翻译成english"},
            {"role": "assistant", "content": "", "tool_calls": calls},
            {"role": "tool", "content": '{"translated_text":"Hello World"}'},
            {"role": "assistant", "content": "Hello World"},
        ]
    }
    messages = to_messages(record)
    assert messages[0]["tools"] == [{"type": "function", "function": {"name": "translate_text", "parameters": {}}}]
    call = messages[2]["tool_calls"][0]["function"]
    assert call == {"name": "translate_text", "arguments": {"text": "你好世界", "target_language": "english"}}
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]


def _tool_record(call_name="calc", arguments='{"e": 1}', extra=()):
    turns = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": call_name, "arguments": arguments}}]},
        {"role": "tool", "content": "1"},
        *extra,
        {"role": "assistant", "content": "a"},
    ]
    return {"messages": turns, "tools": [CALC]}


@pytest.mark.parametrize(
    ("record", "field", "key"),
    [
        (_tool_record("search"), "messages[1].tool_calls[0].function.name", "unknown_tool"),
        (_tool_record(arguments="{'e': 1}"), "messages[1].tool_calls[0].function.arguments", "invalid_json_field"),
        (_tool_record(arguments="[1]"), "messages[1].tool_calls[0].function.arguments", "wrong_type"),
        (_tool_record(extra=[{"role": "tool", "content": "2"}]), "messages[3].role", "tool_without_call"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "1"}], "tools": [CALC]},
            "messages[1].role",
            "tool_without_call",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "", "tool_calls": [{"name": "calc", "arguments": {}}]},
                    {"role": "user", "content": "?"},
                ],
                "tools": [CALC],
            },
            "messages[2].role",
            "turn_order",
        ),
        ({"messages": [{"role": "user", "content": "q"}], "tools": "[{"}, "tools", "invalid_json_field"),
        (
            {"messages": [{"role": "user", "content": "q"}], "tools": [{"type": "function"}]},
            "tools[0].function.name",
            "missing_field",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "", "tool_calls": [{"name": "calc", "arguments": {}}]},
                ]
            },
            "messages[1].tool_calls[0].function.name",
            "unknown_tool",
        ),
    ],  # fmt: skip
)
def test_hostile_tool_records_name_the_field(record, field, key):
    with pytest.raises(ConversationError) as err:
        to_messages(record)
    assert err.value.field == field and err.value.key == key


def test_tool_call_id_must_match_a_pending_call():
    record = _tool_record()
    record["messages"][1]["tool_calls"][0]["id"] = "a"
    record["messages"][2]["tool_call_id"] = "b"
    with pytest.raises(ConversationError) as err:
        to_messages(record)
    assert err.value.field == "messages[2].tool_call_id" and err.value.key == "unknown_tool_call"


def test_prompts_and_rl_rows():
    """A prompt keeps its last user/tool turn; MiniMind RL rows drop their placeholder reply and keep ``gt``."""
    record = _tool_record()
    record["messages"] = record["messages"][:3]
    assert [m["role"] for m in to_messages(record, prompt=True)] == ["system", "user", "assistant", "tool"]
    agent = {
        "conversations": [
            {"role": "system", "content": "", "tools": [CALC]},
            {"role": "user", "content": "256 * 37?"},
            {"role": "assistant", "content": ""},
        ],
        "gt": ["9472"],
    }
    messages, gt = prompt_record(agent)
    assert [m["role"] for m in messages] == ["system", "user"] and messages[0]["tools"] == [CALC] and gt == ["9472"]
    rlaif = {"conversations": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "空"}]}
    assert prompt_record(rlaif) == ([{"role": "user", "content": "你好"}], None)


def test_consecutive_assistant_turns_are_kept():
    turns = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
        {"role": "assistant", "content": "a"},
    ]
    assert to_messages({"conversations": turns}) == turns


@pytest.mark.parametrize(
    ("record", "field", "key"),
    [
        ({"conversations": []}, "conversations", "empty_conversation"),
        ({"conversations": [{"content": "x"}]}, "conversations[0].role", "missing_field"),
        ({"conversations": [{"role": "robot", "content": "x"}]}, "conversations[0].role", "unknown_role"),
        ({"conversations": [{"role": "user", "content": 5}]}, "conversations[0].content", "wrong_type"),
        ({"conversations": "hello"}, "conversations", "wrong_type"),
        ({"conversations": [{"role": "user", "content": "x"}]}, "conversations", "no_assistant_turn"),
        (
            {"conversations": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
            "conversations[1].role",
            "same_role_turns",
        ),
        ({"conversations": [{"role": "assistant", "content": "a"}]}, "conversations[0].role", "turn_order"),
        ({"text": "no chat here"}, "conversations", "missing_field"),
        ({"conversations": [{"from": "alien", "value": "x"}]}, "conversations[0].from", "unknown_role"),
    ],
)
def test_hostile_records_name_the_field(record, field, key):
    with pytest.raises(ConversationError) as err:
        to_messages(record)
    assert err.value.field == field and err.value.key == key


def test_strict_names_file_line_field_and_lenient_counts(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps(GOOD), "{truncated", json.dumps({"conversations": []}), json.dumps(GOOD), "[1, 2]"]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe bad utf8\n")
    skipped = SkipCounter()
    got = list(read_conversations(path, skipped=skipped))
    assert [line for line, _ in got] == [1, 4]
    assert skipped.counts == {"invalid_json": 1, "empty_conversation": 1, "not_object": 1, "invalid_utf8": 1}
    with pytest.raises(DataError, match=r"mixed\.jsonl:2"):
        list(read_conversations(path, strict=True))
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({"conversations": []}) + "\n")
    with pytest.raises(DataError, match=r"mixed\.jsonl:2: field conversations: empty conversation"):
        list(read_conversations(path, strict=True))


def test_csv_and_convert_roundtrip(tmp_path):
    src = tmp_path / "medical.csv"
    src.write_text("department,title,ask,answer\n内科,头痛,头痛怎么办？,多休息。\n外科,x,,空回答\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    n, skipped = convert_file(src, out)
    assert n == 1 and skipped.counts == {"empty_field": 1}
    assert json.loads(out.read_text())["conversations"][1] == {"role": "assistant", "content": "多休息。"}
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="question column"):
        list(read_conversations(bad))


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(read_conversations(tmp_path / "nope.jsonl"))
