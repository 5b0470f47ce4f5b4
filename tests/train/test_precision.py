"""Mixed precision and compilation on CPU: each path trains the same model as fp32 eager, within the
rounding of its number format (not just "the loss is finite")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from weakwater.train.config import TrainConfig
from weakwater.train.stages.pretrain import PretrainStage
from weakwater.train.trainer import Trainer

TINY_MODEL = {"vocab_size": 64, "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64}


def losses(shards: Path, out: Path, **overrides) -> tuple[Trainer, list[float]]:
    """Train 20 steps (same seed, data and init every time); the loss logged every 5 steps and the final val loss."""
    fields = dict(
        data=str(shards),
        out=str(out),
        batch_size=8,
        seq_len=32,
        lr=3e-3,
        warmup_steps=5,
        max_steps=20,
        log_every=5,
        eval_every=20,
        eval_batches=4,
        save_every=0,
        plot=False,
        model=dict(TINY_MODEL),
    )
    cfg = TrainConfig(**{**fields, **overrides})
    trainer = Trainer(cfg, PretrainStage(cfg))
    trainer.fit()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r["loss"] for r in records if "loss" in r] + [r["val_loss"] for r in records if "val_loss" in r]
    assert len(logged) == 5
    return trainer, logged


@pytest.fixture(scope="module")
def fp32(shards, tmp_path_factory) -> list[float]:
    return losses(shards, tmp_path_factory.mktemp("fp32") / "run")[1]


def test_bf16_autocast_tracks_fp32(shards, tmp_path, fp32):
    trainer, bf16 = losses(shards, tmp_path / "run", dtype="bf16")
    assert trainer.dtype == torch.bfloat16
    assert bf16 != fp32  # autocast really ran in bf16
    assert bf16 == pytest.approx(fp32, rel=2e-3)  # only the matmuls round to bf16; measured ~1e-5
    assert bf16[-2] < 0.92 * bf16[0]  # and it learns


@pytest.mark.slow
def test_compiled_model_trains_like_eager(shards, tmp_path, fp32):
    pytest.importorskip("torch._inductor")
    trainer, compiled = losses(shards, tmp_path / "run", compile=True)
    assert hasattr(trainer.forward_model, "_orig_mod")  # the step really ran through torch.compile
    assert compiled == pytest.approx(fp32, rel=1e-3)  # fused kernels reorder float sums, nothing more
