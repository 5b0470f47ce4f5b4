"""The demo's measurements (weakwater/eval/demo_tasks.py): language-model metrics and the LoRA domain probe
against hand values."""

from __future__ import annotations

import json
import math

import pytest
import torch

from weakwater.eval import demo_tasks
from weakwater.eval.demo_tasks import language_model_metrics


def test_domain_probe_recall_and_chance(tmp_path, monkeypatch):
    from weakwater.data.synth.generate import generate

    generate(tmp_path, seed=0, size="small")
    world = json.loads((tmp_path / "world.json").read_text(encoding="utf-8"))
    kinds = {"colour": 10, "legs": 4, "food": 8, "region": 6}
    chance = sum(1 / kinds[c["heldout_attribute"]] for c in world["creatures"]) / len(world["creatures"])
    everything = " ".join(
        f"{c['colour'][lang]} {c['food'][lang]} {c['region'][lang]} {c['legs']} legs {c['legs']}条腿"
        for c in world["creatures"]
        for lang in ("en", "zh")
    )
    for reply, recall in (("", 0.0), (everything, 1.0)):
        monkeypatch.setattr(
            demo_tasks, "generate_answers", lambda model, tok, prompts, r=reply, **kw: [r] * len(prompts)
        )
        probe = demo_tasks.domain_probe(None, None, tmp_path)
        assert probe == pytest.approx({"recall": recall, "chance": chance})


class Uniform(torch.nn.Module):
    """Predicts every token with probability 1/V: its loss is exactly ln V."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*ids.shape, self.vocab)


def test_language_model_metrics_by_hand(tmp_path, bpe_tokenizer_dir):
    from weakwater.data.prepare import prepare
    from weakwater.tokenizer import load_tokenizer

    tok = load_tokenizer(bpe_tokenizer_dir)
    docs = tmp_path / "docs.jsonl"
    val = tmp_path / "val.jsonl"
    docs.write_text("".join(json.dumps({"text": f"The river flows east {i}. 河水向东流。"}) + "\n" for i in range(40)))
    val.write_text(json.dumps({"text": "Small models learn fast on small data."}) + "\n")
    prepare([docs], bpe_tokenizer_dir, tmp_path / "shards", val_data=[val], workers=1)
    m = language_model_metrics(Uniform(tok.vocab_size), tmp_path / "shards", tok, seq_len=8)
    assert m["val_loss"] == pytest.approx(math.log(tok.vocab_size), rel=1e-5)
    n_bytes = len(b"Small models learn fast on small data.")
    n_targets = len(tok.encode("Small models learn fast on small data.")) - 1
    # bits/byte = total nats / ln 2 / bytes; the val split may add a document separator token
    assert m["bits_per_byte"] == pytest.approx(m["val_loss"] * m["val_tokens"] / math.log(2) / n_bytes, rel=1e-6)
    assert m["val_tokens"] >= n_targets
    assert m["unigram_loss"] > 0
