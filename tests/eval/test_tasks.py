"""Held-out scoring: demo tasks from real generations (answers judged by weakwater.answers), preferences."""

from __future__ import annotations

import json

import pytest
import torch

from weakwater.answers import is_correct
from weakwater.eval import tasks
from weakwater.eval.tasks import pair_logps, preference_metrics, run_task
from weakwater.model.io import load_model
from weakwater.tokenizer import load_tokenizer


def test_preference_metrics_by_hand():
    policy = torch.tensor([[-1.0, -2.0], [-3.0, -1.0], [-2.0, -2.5]])
    assert preference_metrics(policy) == pytest.approx({"accuracy": 2 / 3, "mean_margin": (1 - 2 + 0.5) / 3})
    reference = torch.tensor([[-1.0, -1.0], [-5.0, -1.0], [-2.0, -2.5]])
    # implicit rewards (policy - reference): [0, -1], [2, 0], [0, 0] -> margins 1, 2, 0; a tie is no win
    assert preference_metrics(policy, reference) == pytest.approx({"accuracy": 2 / 3, "mean_margin": 1.0})
    by_kind = preference_metrics(policy, kinds=["wrong", "ramble", "wrong"])["per_kind"]
    assert by_kind == {"ramble": 0.0, "wrong": 1.0}


def test_run_task_scores_real_generations(tmp_path, make_model_dir, bpe_tokenizer_dir, monkeypatch):
    model = load_model(make_model_dir(tmp_path / "m"))
    tok = load_tokenizer(bpe_tokenizer_dir)
    rows = [{"messages": [{"role": "user", "content": q}], "answer": a, "task": t}
            for q, a, t in [("What is 12 + 35?", "47", "arith"), ("河水向哪里流？", "东", "facts")]]  # fmt: skip
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    result = run_task(model, tok, path, max_new_tokens=8)
    generations = tasks.generate_answers(model, tok, [r["messages"] for r in rows], max_new_tokens=8)
    assert [e["generation"] for e in result["examples"]] == generations  # greedy: reproducible
    # Sampled replies: seeded per conversation, so the same whatever the batching, and repeats differ.
    repeated = [r["messages"] for r in rows] * 3
    sampled = tasks.generate_answers(model, tok, repeated, max_new_tokens=8, temperature=1.0, seed=5)
    assert tasks.generate_answers(model, tok, repeated, 8, batch_size=1, temperature=1.0, seed=5) == sampled
    assert len(set(sampled)) == len(sampled)
    expected = sum(is_correct(g, r["answer"]) for g, r in zip(generations, rows)) / 2
    assert result["accuracy"] == expected and set(result["per_task"]) == {"arith", "facts"}
    # A model that always answers "47" gets the arithmetic row right and the other wrong.
    monkeypatch.setattr(tasks, "generate_answers", lambda *a, **k: ["47.", "47."])
    assert run_task(model, tok, path)["per_task"] == {"arith": 1.0, "facts": 0.0}


def test_pair_logps_shapes_and_eval_errors(tmp_path, make_model_dir, bpe_tokenizer_dir):
    model = load_model(make_model_dir(tmp_path / "m"))
    tok = load_tokenizer(bpe_tokenizer_dir)
    q = {"role": "user", "content": "hi"}
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"chosen": [q, {"role": "assistant", "content": "hello"}],
                                 "rejected": [q, {"role": "assistant", "content": "河水"}]}) + "\n")  # fmt: skip
    logps = pair_logps(model, tok, pairs)
    assert logps.shape == (1, 2) and (logps < 0).all()
    # per token = the sum over the answer's tokens (reply + <|im_end|>) divided by their number
    counts = [len(tok.encode(text)) + 1 for text in ("hello", "河水")]
    assert pair_logps(model, tok, pairs, per_token=True)[0].tolist() == pytest.approx(
        [float(logps[0, 0]) / counts[0], float(logps[0, 1]) / counts[1]], rel=1e-5
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [q]}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        run_task(model, tok, bad)
