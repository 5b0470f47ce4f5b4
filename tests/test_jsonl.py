"""JSONL reading: hostile lines raise clear errors in strict mode and are counted otherwise."""

from __future__ import annotations

import pickle

import pytest

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
