"""Conversation parsing: every supported format, and every hostile record named precisely or counted."""

from __future__ import annotations

import json

import pytest

from weakwater.data.chat import ConversationError, convert_file, read_conversations, to_messages
from weakwater.data.jsonl import DataError, SkipCounter

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
