"""Generative math: row formats, malformed rows, pass@k, the built-in set, scoring through the answer checker."""

from __future__ import annotations

import json
from math import comb

import pytest

from weakwater.eval import math_qa
from weakwater.eval.math_qa import evaluate_math, load_problems, pass_at_k
from weakwater.eval.tasks import Reply
from weakwater.jsonl import DataError
from weakwater.model.io import load_model
from weakwater.tokenizer import load_tokenizer


def write(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n"
                            for line in lines), encoding="utf-8")  # fmt: skip
    return path


def test_formats_and_malformed_rows(tmp_path):
    path = write(
        tmp_path / "mixed.jsonl",
        [
            {"question": "Janet has 3 eggs and buys 2. How many?", "answer": "3 + 2 = <<3+2=5>>5\n#### 5"},
            {"question": "小明有3个苹果，又买了2个，一共有几个？", "answer": "5"},
            {"problem": "一半是多少？", "ans": "(1/2)"},
            {"question": "CMATH style", "golden": 12},
            {"messages": [{"role": "user", "content": "47加76等于多少？"}], "answer": "123"},
            '{"question": "broken json',
            {"question": "no answer"},
            {"question": "", "answer": "1"},
            ["not", "an", "object"],
        ],
    )
    problems, malformed = load_problems(path)
    assert [p.gold for p in problems] == ["5", "5", "(1/2)", "12", "123"]
    assert problems[4].question == "47加76等于多少？" and problems[0].where == f"{path}:1"
    assert [m.split(": ", 1)[0] for m in malformed] == [f"{path}:{i}" for i in (6, 7, 8, 9)]
    assert "invalid JSON" in malformed[0] and "'answer'" in malformed[1] and "non-empty" in malformed[2]
    with pytest.raises(DataError, match=f"{path}:6"):
        load_problems(path, strict=True)
    with pytest.raises(DataError, match="no usable rows"):
        load_problems(write(tmp_path / "bad.jsonl", ['{"x": 1}']))


def test_real_gsm8k_sample(reference_dir):
    problems, malformed = load_problems(reference_dir / "data/eval/gsm8k_test_head100.jsonl")
    assert len(problems) == 100 and not malformed
    assert (problems[0].gold, problems[2].gold) == ("18", "70000")


def test_pass_at_k_by_hand():
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 4, 4) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 4) == 1.0  # one of the four is right
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - comb(3, 2) / comb(5, 2))  # 1 - 3/10


def test_builtin_is_the_demo_heldout_set(tmp_path):
    from weakwater.data.synth.generate import generate, heldout_problems

    generate(tmp_path, seed=3, size="small")
    written = [json.loads(line) for line in (tmp_path / "eval_reasoning.jsonl").read_text().splitlines()]
    assert heldout_problems(seed=3, size="small") == written
    problems, malformed = load_problems("builtin")
    assert len(problems) == 100 and not malformed and problems[0].where == "builtin:1"


def test_scores_replies_with_the_answer_checker(tmp_path, make_model_dir, bpe_tokenizer_dir, monkeypatch):
    model = load_model(make_model_dir(tmp_path / "m"))
    tok = load_tokenizer(bpe_tokenizer_dir)
    path = write(tmp_path / "p.jsonl", [{"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": "4"}])
    problems, _ = load_problems(path)
    # Real generations first: the result has every field and the examples are the greedy replies.
    result = evaluate_math(model, tok, problems, max_new_tokens=6, samples=2)
    assert result["n"] == 2 and {"accuracy", "pass_at_1", "pass_at_k", "hit_token_limit", "time_s"} <= set(result)
    # Then scripted replies: greedy right on the first problem only; of the sampled, 1/2 and 0/2 right.
    script = {
        0.0: ["<think>\n1+1=2\n</think>\n<answer>\n2\n</answer>", "The answer is 5."],
        0.7: ["\\boxed{2}", "#### 3", "4 apples? no, 5", "five"],
    }

    def fake(model, tokenizer, convs, max_new_tokens, batch_size, weights, temperature=0.0, seed=0, progress=None):
        return [Reply(t, 3, "stop") for t in script[temperature]]

    monkeypatch.setattr(math_qa, "generate_replies", fake)
    result = evaluate_math(model, tok, problems, samples=2, temperature=0.7)
    assert result["accuracy"] == 0.5 and result["well_formed"] == 0.5
    assert result["pass_at_1"] == pytest.approx((0.5 + 0.0) / 2)
    assert result["pass_at_k"] == pytest.approx((1.0 + 0.0) / 2)
    assert result["examples"][1]["extracted"] == "5" and not result["examples"][1]["correct"]
