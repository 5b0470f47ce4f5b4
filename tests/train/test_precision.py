"""Mixed precision and compilation on CPU: each path trains the same model as fp32 eager, within the
rounding of its number format (not just "the loss is finite")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from weakwater.train.trainer import Trainer

from .test_trainer import make_cfg, metrics, run, weights


def train(shards: Path, out: Path, stop_at: int | None = None, **overrides) -> tuple[Trainer, list[float]]:
    """test_trainer's 20-step run (same seed, data and init every time), evaluated at the end only; returns
    the trainer and the losses logged every 5 steps plus the final validation loss."""
    trainer = run(make_cfg(shards, out, eval_every=20, save_every=0, **overrides), stop_at=stop_at)
    records = metrics(out)
    logged = [r["loss"] for r in records if "loss" in r] + [r["val_loss"] for r in records if "val_loss" in r]
    return trainer, logged


@pytest.fixture(scope="module")
def fp32(shards, tmp_path_factory) -> list[float]:
    _, logged = train(shards, tmp_path_factory.mktemp("fp32") / "run")
    assert len(logged) == 5
    return logged


def test_bf16_autocast_tracks_fp32(shards, tmp_path, fp32):
    trainer, bf16 = train(shards, tmp_path / "run", dtype="bf16")
    assert trainer.dtype == torch.bfloat16
    assert bf16 != fp32  # autocast really ran in bf16
    assert bf16 == pytest.approx(fp32, rel=2e-3)  # only the matmuls round to bf16; measured ~1e-5
    assert bf16[-2] < 0.92 * bf16[0]  # and it learns


def test_fp16_with_grad_scaler_tracks_fp32_and_resumes_exactly(shards, tmp_path, fp32):
    """fp16 autocast + GradScaler (the path of GPUs without bf16) runs on CPU too, and an interrupted
    fp16 run resumes to the same weights as an uninterrupted one."""
    trainer, fp16 = train(shards, tmp_path / "full", dtype="fp16")
    assert trainer.dtype == torch.float16 and trainer.scaler is not None
    assert fp16 != fp32  # autocast really ran in fp16
    assert fp16 == pytest.approx(fp32, rel=1e-2)  # measured 3e-3 (scaled fp16 grads differ more than bf16)
    part, _ = train(shards, tmp_path / "part", stop_at=12, dtype="fp16")
    assert part.interrupted and part.step == 12
    resumed, _ = train(shards, tmp_path / "part", dtype="fp16", resume=True)
    assert resumed.step == 20
    full, again = weights(tmp_path / "full" / "final"), weights(tmp_path / "part" / "final")
    assert all(torch.equal(full[k], again[k]) for k in full)


@pytest.mark.slow
def test_compiled_model_trains_like_eager(shards, tmp_path, fp32):
    pytest.importorskip("torch._inductor")
    trainer, compiled = train(shards, tmp_path / "run", compile=True)
    assert hasattr(trainer.forward_model, "_orig_mod")  # the step really ran through torch.compile
    assert compiled == pytest.approx(fp32, rel=1e-3)  # fused kernels reorder float sums, nothing more
