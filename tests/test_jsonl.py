"""JSONL reading: hostile lines raise clear errors in strict mode and are counted otherwise."""

from __future__ import annotations

import json
import pickle

import pytest

from weakwater.data.chat import record_text
from weakwater.jsonl import DataError, SkipCounter, get_text, read_jsonl

HOSTILE = (
    b'\xef\xbb\xbf{"text": "bom first line"}\r\n'  # 1: BOM + CRLF, valid
    b'{"text": "ok"}\n'  # 2
    b"\n"  # 3: blank, ignored
    b'{"text": "trunc\n'  # 4: truncated JSON
    b'{"text": "\xff\xfe bad utf8"}\n'  # 5: invalid UTF-8
    b"[1, 2, 3]\n"  # 6: not an object
    b'{"text": "' + b"x" * 5000 + b'"}\n'  # 7: longer than the test cap
    b'{"text": "last, no newline"}'  # 8
)


@pytest.fixture
def hostile(tmp_path):
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(HOSTILE)
    return path


def test_lenient_skips_and_counts(hostile):
    skipped = SkipCounter()
    rows = list(read_jsonl(hostile, skipped=skipped, max_line_bytes=1000))
    assert [n for n, _ in rows] == [1, 2, 8]
    assert rows[0][1] == {"text": "bom first line"}
    assert dict(skipped.counts) == {"invalid_json": 1, "invalid_utf8": 1, "not_object": 1, "line_too_long": 1}
    assert skipped.first["invalid_utf8"] == f"{hostile}:5"
    assert "skipped 4 records" in skipped.summary()


@pytest.mark.parametrize("cap,line,reason", [(10_000, 4, "invalid JSON"), (10, 1, "longer than")])
def test_strict_names_file_and_line(hostile, cap, line, reason):
    with pytest.raises(DataError, match=reason) as err:
        list(read_jsonl(hostile, strict=True, max_line_bytes=cap))
    assert f"{hostile}:{line}" in str(err.value)


def test_huge_line_within_default_cap_is_read(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text('{"text": "' + "字" * 4_000_000 + '"}\n{"text": "after"}\n', encoding="utf-8")
    rows = list(read_jsonl(path, strict=True))
    assert len(rows[0][1]["text"]) == 4_000_000 and rows[1] == (2, {"text": "after"})


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert list(read_jsonl(empty, strict=True)) == []
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        list(read_jsonl(tmp_path / "missing.jsonl"))


def test_fields():
    assert get_text({"text": "a"}, "text", "f:1") == "a"
    with pytest.raises(DataError, match="f:1: missing field 'text'"):
        get_text({"content": "a"}, "text", "f:1")
    with pytest.raises(DataError, match="f:2: field 'text' must be a string, got int") as err:
        get_text({"text": 3}, "text", "f:2")
    assert err.value.reason == "wrong_type"
    chat = {"conversations": [{"role": "user", "content": "问"}, {"role": "assistant", "content": "答"}]}
    assert record_text(chat, "text", "f:3") == "问\n答"
    with pytest.raises(DataError, match="f:4: field messages: no non-empty assistant turn"):
        record_text({"messages": [{"role": "user"}]}, "text", "f:4")
    pair = {
        "chosen": [*chat["conversations"]],
        "rejected": [chat["conversations"][0], {"role": "assistant", "content": "否"}],
    }
    assert record_text(pair, "text", "f:5") == "问\n答\n否"
    alpaca = {"instruction": "翻译", "input": "hi", "output": "你好"}
    assert "你好" in record_text(alpaca, "text", "f:6")
    with pytest.raises(DataError, match="f:7: no text: missing field 'text' .*the line has: prompt, answer"):
        record_text({"prompt": "p", "answer": "a"}, "text", "f:7")


def _summary_of(path, field="text"):
    from weakwater.tokenizer.train import iter_texts

    skipped = SkipCounter()
    list(iter_texts([path], field, skipped=skipped))
    return skipped.summary()


def test_lenient_summary_names_the_field_shows_lines_and_says_what_to_do(tmp_path):
    """The three mistakes a new user makes with real data: a JSON array instead of JSONL, a GBK file,
    the wrong field name. The summary must show the first lines and the fix, not only a count."""
    rows = [{"text": f"第{i}行"} for i in range(5)]
    array = tmp_path / "array.json"
    array.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    summary = _summary_of(array)
    assert f"invalid_json x{len(array.read_text().splitlines())}, first: {array}:1: invalid JSON" in summary
    assert f"{array}:2:" in summary and f"{array}:3:" in summary and f"{array}:4:" not in summary
    assert "one JSON object per line" in summary and "json.load" in summary

    gbk = tmp_path / "gbk.jsonl"
    gbk.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("gbk"))
    summary = _summary_of(gbk)
    assert f"invalid_utf8 x5, first: {gbk}:1: invalid UTF-8" in summary and "iconv -f GB18030 -t UTF-8" in summary

    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text("".join(json.dumps({"content": r["text"]}) + "\n" for r in rows), encoding="utf-8")
    summary = _summary_of(wrong)
    assert "missing_field x5" in summary and "missing field 'text'" in summary and "the line has: content" in summary
    assert "--text-field" in summary


def test_data_error_survives_pickling():
    err = pickle.loads(pickle.dumps(DataError("f:9: bad", "invalid_json")))
    assert str(err) == "f:9: bad" and err.reason == "invalid_json" and isinstance(err, ValueError)


def test_skip_counter_merge():
    a, b = SkipCounter(), SkipCounter()
    a.add("invalid_json", "a:1")
    b.add("invalid_json", "b:7", 2)
    b.add("empty_text", "b:9")
    a.merge(b)
    assert a.total == 4 and a.first == {"invalid_json": "a:1", "empty_text": "b:9"}
