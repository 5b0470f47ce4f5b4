"""Perplexity / bits-per-byte: exact on a model with known outputs, and equal to a direct computation."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from weakwater.cli import main
from weakwater.eval.ppl import evaluate_ppl, windows
from weakwater.model import load_model
from weakwater.tokenizer import load_tokenizer

DOCS = ["The river flows east to the sea.", "小模型在小数据上学得很快。", "What is 12 + 35? The answer is 47. " * 6]


class UniformLM(nn.Module):
    """Predicts every token with probability 1/vocab: loss must be exactly ln(vocab)."""

    def __init__(self, vocab: int, max_seq_len: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.config = type("Config", (), {"max_seq_len": max_seq_len})()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*ids.shape, self.vocab) + self.dummy


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_windows_cover_every_target_once():
    ids = list(range(23))
    pairs = list(windows(ids, 5))
    assert [y for _, ys in pairs for y in ys] == ids[1:]
    assert all(len(x) == len(y) <= 5 and x[1:] == y[:-1] for x, y in pairs)


def test_uniform_model_exact(tmp_path, bpe_tokenizer_dir):
    tok = load_tokenizer(bpe_tokenizer_dir)
    write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in DOCS])
    result = evaluate_ppl(UniformLM(tok.vocab_size, 16), tok, tmp_path / "d.jsonl", batch_size=3)
    n_tokens = sum(len(tok.encode(t)) for t in DOCS)
    n_bytes = sum(len(t.encode()) for t in DOCS)
    assert (result["documents"], result["tokens"], result["bytes"]) == (3, n_tokens, n_bytes)
    assert result["loss"] == pytest.approx(math.log(tok.vocab_size))
    assert result["perplexity"] == pytest.approx(tok.vocab_size)
    assert result["bits_per_byte"] == pytest.approx(n_tokens * math.log2(tok.vocab_size) / n_bytes)


def test_real_model_matches_direct_loss_and_cli(tmp_path, make_model_dir, capsys):
    model_dir = make_model_dir(tmp_path / "m")
    model, tok = load_model(model_dir).eval(), load_tokenizer(model_dir)
    rows = [{"text": DOCS[0]}, {"other": 1}, {"text": DOCS[1]}]
    write_jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "d.jsonl").write_text((tmp_path / "d.jsonl").read_text() + "{broken\n")
    nats = 0.0
    with torch.no_grad():
        for text in DOCS[:2]:
            ids = torch.tensor([[tok.eos_id, *tok.encode(text)]])
            nats += F.cross_entropy(model(ids[:, :-1])[0], ids[0, 1:], reduction="sum").item()
    n = sum(len(tok.encode(t)) for t in DOCS[:2])
    rc = main(["eval", "ppl", "--model", str(model_dir), "--data", str(tmp_path / "d.jsonl"), "--device", "cpu",
               "--out", str(tmp_path / "r.json")])  # fmt: skip
    assert rc == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["loss"] == pytest.approx(nats / n, rel=1e-5)
    assert result["skipped"]["total"] == 2  # the row without text and the broken line are counted, not fatal
    assert json.loads(capsys.readouterr().out)["tokens"] == n


def test_no_documents_is_an_error(tmp_path, make_model_dir, capsys):
    model_dir = make_model_dir(tmp_path / "m")
    write_jsonl(tmp_path / "d.jsonl", [{"content": "x"}])
    assert main(["eval", "ppl", "--model", str(model_dir), "--data", str(tmp_path / "d.jsonl")]) == 2
    assert "no documents" in capsys.readouterr().err


def test_chat_and_preference_files_are_read_like_tokenizer_stats(tmp_path, bpe_tokenizer_dir, reference_dir, capsys):
    """One reader of "the text in this file": `eval ppl` scores the chat and DPO files that
    `tokenizer stats` measures, and both see the same documents."""
    from weakwater.data.text import record_text

    tok = load_tokenizer(bpe_tokenizer_dir)
    for name in ("sft.jsonl", "r1.jsonl", "dpo.jsonl"):
        lines = (reference_dir / "data" / name).read_text(encoding="utf-8").splitlines()[:3]
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        texts = [record_text(json.loads(line), "text", name) for line in lines]
        result = evaluate_ppl(UniformLM(tok.vocab_size, 64), tok, path)
        assert result["documents"] == 3 and result["skipped"]["total"] == 0
        assert result["bytes"] == sum(len(t.encode()) for t in texts)
        assert main(["tokenizer", "stats", "--tokenizer", str(bpe_tokenizer_dir), "--data", str(path)]) == 0
        stats = json.loads(capsys.readouterr().out)
        assert stats["docs"] == 3 and stats["bytes"] == result["bytes"]
