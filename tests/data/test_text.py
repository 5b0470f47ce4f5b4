"""The text of any accepted row (plain, chat, Alpaca, preference pair), sampling, held-out split, and the
lenient reader's summary of what it skipped."""

from __future__ import annotations

import json

import pytest

from weakwater.data.text import is_heldout, iter_texts, record_text
from weakwater.jsonl import DataError, SkipCounter

LINES = ["今天天气很好，我们去公园散步吧。", "The quick brown fox jumps over the lazy dog.", "数学：3 + 4 = 7。"]


@pytest.fixture
def corpus(tmp_path):
    rows = [{"text": f"{line} 第{i}行 line {i}"} for i in range(60) for line in LINES]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_record_text_of_every_format():
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


def test_empty_texts_are_counted(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"text": ""}\n{"text": "a"}\n')
    skipped = SkipCounter()
    assert list(iter_texts([path], skipped=skipped)) == ["a"]
    assert skipped.as_dict()["by_reason"] == {"empty_text": 1} and skipped.first["empty_text"] == f"{path}:1"


def test_max_bytes_bounds_the_sample(corpus):
    texts = list(iter_texts([corpus], max_bytes=2000, seed=1))
    total = sum(len(t.encode()) for t in texts)
    assert 0 < total < 2000 + max(len(t.encode()) for t in texts)
    assert texts == list(iter_texts([corpus], max_bytes=2000, seed=1))  # deterministic


def test_heldout_split_is_disjoint(corpus):
    train = list(iter_texts([corpus], heldout_frac=0.2))
    held = list(iter_texts([corpus], heldout_frac=0.2, heldout=True))
    assert len(train) + len(held) == 60 * len(LINES)
    assert 0.1 < len(held) / (len(train) + len(held)) < 0.3
    assert is_heldout(5, 0.0) is False
