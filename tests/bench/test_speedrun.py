"""``weakwater bench speedrun``: time to target worked out by hand, and a tiny run on the reference corpus."""

from __future__ import annotations

import json

import pytest

from weakwater.bench.speedrun import summarise
from weakwater.cli import main


def test_time_to_target_by_hand():
    runs = {
        "baseline": {"train_s": 40.0, "curve": [
            {"step": 10, "train_s": 10.0, "val_loss": 5.0},
            {"step": 20, "train_s": 20.0, "val_loss": 4.0},
            {"step": 40, "train_s": 40.0, "val_loss": 3.5},
        ]},
        "fast": {"train_s": 60.0, "curve": [
            {"step": 10, "train_s": 15.0, "val_loss": 3.4},
            {"step": 20, "train_s": 30.0, "val_loss": 3.0},
        ]},
        "never": {"train_s": 10.0, "curve": [{"step": 10, "train_s": 10.0, "val_loss": 6.0}]},
    }  # fmt: skip
    result = summarise(runs, None, tokens_per_step=100)
    assert result["target"] == 3.5  # the reference's final held-out loss
    rows = {r["recipe"]: r for r in result["rows"]}
    assert rows["baseline"]["time_ratio"] == 1.0 and rows["baseline"]["tokens_to_target"] == 4000
    assert rows["fast"]["s_to_target"] == 15.0 and rows["fast"]["time_ratio"] == pytest.approx(15 / 40)
    assert rows["never"]["s_to_target"] is None and rows["never"]["time_ratio"] is None
    assert summarise(runs, 4.5, 100)["rows"][0]["steps_to_target"] == 20


@pytest.mark.slow
def test_speedrun_on_the_reference_corpus(tmp_path, reference_dir, monkeypatch):
    monkeypatch.setenv("WEAKWATER_NO_PROGRESS", "1")
    out = tmp_path / "speedrun.json"
    args = ["bench", "speedrun", "--data", str(reference_dir / "data" / "pretrain.jsonl")]
    args += ["--tokenizer", str(reference_dir / "minimind_tokenizer" / "minimind2_4014e62"), "--device", "cpu"]
    args += ["--model-arg", "dim=32", "--model-arg", "n_layers=1", "--model-arg", "n_heads=2", "--seq", "32"]
    args += ["--batch", "4", "--epochs", "0.02", "--evals", "2", "--recipes", "baseline,ours,combined"]
    args += ["--json", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert [r["recipe"] for r in result["rows"]] == ["baseline", "ours", "combined"]
    assert result["rows"][0]["time_ratio"] == 1.0 and result["steps"] > 10
    assert result["recipes"]["combined"]["optimizer"] == "muon"
    assert result["recipes"]["ours"]["schedule"] == "wsd" and result["recipes"]["ours"]["lr"] == 1e-3
    assert all(len(c) == 2 for c in result["curves"].values())
    assert len(result["environment"]["load_average"]) == 3  # 1, 5 and 15 minutes
