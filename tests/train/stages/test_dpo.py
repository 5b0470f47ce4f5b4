"""DPO family stages: short runs on the real pairs, the precomputed reference (losses: test_losses.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from weakwater.data.dpo import collate_pairs
from weakwater.model.loglik import sequence_logprobs
from weakwater.tokenizer import load_tokenizer
from weakwater.train.stages.dpo import REF_FILE, DPOConfig, DPOStage
from weakwater.train.trainer import Trainer


def _cfg(tmp_path, data, init, **kw) -> DPOConfig:
    base = dict(data=str(data), out=str(tmp_path / "dpo"), init=str(init), max_steps=2, batch_size=2, seq_len=64,
                eval_every=0, eval_batches=1, save_every=0, log_every=1, device="cpu", warmup_steps=0,
                allow_truncation=True)  # fmt: skip
    return DPOConfig(**{**base, **kw})


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode", ["precompute", "copy", "lora", "simpo", "ipo"])
def test_short_runs_on_real_pairs(tmp_path, reference_dir, make_model_dir, bpe_tokenizer_dir, mode):
    init = make_model_dir(tmp_path / "init")
    data = reference_dir / "data" / "dpo.jsonl"
    extra = {
        "precompute": {"precompute_ref": True, "val_data": str(data)},
        "copy": {},
        "lora": {"lora_rank": 4, "lora_alpha": 8.0, "val_data": str(data)},
        "simpo": {"loss_type": "simpo", "beta": 2.0},
        "ipo": {"loss_type": "ipo"},
    }[mode]
    cfg = _cfg(tmp_path, data, init, lr=1e-3, **extra)
    tok = load_tokenizer(bpe_tokenizer_dir)
    stage = DPOStage(cfg, tok)
    trainer = Trainer(cfg, stage, tokenizer=tok)
    final = trainer.fit()
    assert (final / "config.json").exists()
    rows = [r for r in _metrics(tmp_path / "dpo") if "loss" in r]
    if mode in ("precompute", "copy", "lora"):
        # The policy starts equal to the reference, so the first loss is exactly log 2.
        assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert all("reward_acc" in r and "logp_chosen" in r and "reward_margin" in r for r in rows)
    evals = [r for r in _metrics(tmp_path / "dpo") if "train_skipped" in r]
    assert evals and evals[-1]["train_skipped"] == 0
    if mode == "precompute":
        assert torch.load(tmp_path / "dpo" / REF_FILE, weights_only=True)["logps"].shape == (200, 2)
        assert "val_reward_margin" in evals[-1]
    if mode == "lora":
        assert (tmp_path / "dpo" / "adapter" / "adapter_config.json").exists()


def test_stage_loss_uses_precomputed_reference(tmp_path, make_model_dir, bpe_tokenizer_dir):
    """The stage's loss equals the hand formula applied to the model's own log-probs and the stored reference."""
    init = make_model_dir(tmp_path / "init")
    q = {"role": "user", "content": "What is 12 + 35?"}
    pair = {
        "chosen": [q, {"role": "assistant", "content": "47"}],
        "rejected": [q, {"role": "assistant", "content": "河水"}],
    }
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps(pair) + "\n")
    tok = load_tokenizer(bpe_tokenizer_dir)
    cfg = _cfg(tmp_path, data, init, beta=0.1)
    stage = DPOStage(cfg, tok)
    stage.datasets()
    stage.ref_logps = torch.tensor([[-5.0, -7.0]])
    from weakwater.model.io import load_model

    model = load_model(init)
    batch = stage.collate([stage.train_set[0]])
    assert batch["input_ids"].shape[0] == 1  # chosen and rejected packed into one row
    loss, count, metrics = stage.loss(model, batch, train=True)
    padded = collate_pairs([stage.train_set[0]], tok.eos_id)  # one answer per row: the plain sums
    logps, _ = sequence_logprobs(model(padded["input_ids"]), padded["labels"])
    h = (logps[0] + 5.0) - (logps[1] + 7.0)
    assert count.item() == 1
    assert loss.item() == pytest.approx(-torch.nn.functional.logsigmoid(0.1 * h).item(), rel=1e-5)
    assert metrics["reward_margin"].item() == pytest.approx(0.1 * h.item(), rel=1e-5)
    assert metrics["reward_acc"].item() == float(h.item() > 0)


def test_config_needs_init_for_reference(tmp_path):
    with pytest.raises(ValueError, match="--init is required"):
        DPOConfig(data="x.jsonl", out=str(tmp_path)).validate()
    with pytest.raises(ValueError, match="--loss-type"):
        DPOConfig(data="x.jsonl", out=str(tmp_path), init="m", loss_type="hinge").validate()
