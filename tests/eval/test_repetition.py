"""Repetition metrics by hand, prompt files, and a real run through the decoding engine."""

from __future__ import annotations

import json

import pytest

from weakwater.eval.repetition import (
    BUILTIN_PROMPTS,
    distinct,
    evaluate_repetition,
    load_prompts,
    repeated_ngram_rate,
    repetition_metrics,
    units,
)
from weakwater.eval.tasks import Reply
from weakwater.jsonl import DataError
from weakwater.model.io import load_model
from weakwater.tokenizer import load_tokenizer


def test_units_are_tokenizer_free():
    assert units("The river, the RIVER! 河水向东流。") == ["the", "river", "the", "river", "河", "水", "向", "东", "流"]
    assert units("19999") == ["1", "9", "9", "9", "9"]  # digits one by one, so "1999999..." is a loop


def test_metrics_by_hand():
    seq = ["a", "b", "a", "b", "a", "b"]
    assert distinct(seq, 1) == pytest.approx(2 / 6)
    assert distinct(seq, 2) == pytest.approx(2 / 5)  # ab ba ab ba ab
    # 4-grams: abab baba abab -> the third was seen before
    assert repeated_ngram_rate(seq, 4) == pytest.approx(1 / 3)
    assert repeated_ngram_rate(list("abcdef"), 4) == 0.0
    assert repeated_ngram_rate(["a"], 4) is None and distinct([], 1) is None
    replies = [Reply("a b a b a b", 6, "length"), Reply("one two three four", 4, "stop"), Reply("", 0, "stop")]
    m = repetition_metrics(replies)
    assert m["distinct_1"] == pytest.approx((2 / 6 + 1.0) / 2)  # the empty reply has no unigram: not averaged
    assert m["repeated_4gram"] == pytest.approx((1 / 3 + 0.0) / 2)
    assert m["hit_token_limit"] == pytest.approx(1 / 3)
    assert m["looping"] == pytest.approx(1 / 3)  # only the first reply repeats a 4-gram
    assert m["mean_units"] == pytest.approx(10 / 3)


def test_prompt_files(tmp_path):
    assert load_prompts(None) == (list(BUILTIN_PROMPTS), [])
    assert any("\u4e00" <= ch <= "\u9fff" for p in BUILTIN_PROMPTS for ch in p)  # bilingual
    txt = tmp_path / "p.txt"
    txt.write_text("Tell me a story.\n\n讲个故事。\n", encoding="utf-8")
    assert load_prompts(txt) == (["Tell me a story.", "讲个故事。"], [])
    rows = [{"prompt": "a"}, {"messages": [{"role": "user", "content": "b"}]}, {"text": "c"}, {"instruction": "d"}]
    jl = tmp_path / "p.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts, malformed = load_prompts(jl)
    assert prompts == ["a", "b", "d"] and malformed == [
        f"{jl}:3: missing field 'prompt' or 'question' or 'instruction'"
    ]
    with pytest.raises(DataError, match=f"{jl}:3"):
        load_prompts(jl, strict=True)


def test_real_generation(tmp_path, make_model_dir, bpe_tokenizer_dir):
    model = load_model(make_model_dir(tmp_path / "m"))
    tok = load_tokenizer(bpe_tokenizer_dir)
    result = evaluate_repetition(model, tok, ["Tell me a story.", "讲个故事。"], max_new_tokens=12, samples=2)
    assert result["greedy"]["replies"] == 2 and result["sampled"]["replies"] == 4
    # A random model rarely emits the end-of-turn token: with 12 new tokens most replies hit the limit.
    assert 0.0 <= result["greedy"]["hit_token_limit"] <= 1.0 and result["sampled"]["temperature"] == 0.8
    assert result["examples"][0]["prompt"] == "Tell me a story."
