"""Checkpoints: directory mechanics, corrupt-checkpoint fallback, the one format, and what --resume may change."""

from __future__ import annotations

import json

import pytest
import torch

from weakwater.train import checkpoint
from weakwater.train.checkpoint import CheckpointManager
from weakwater.train.config import ConfigError
from weakwater.train.optim import optimizers
from weakwater.train.stages.pretrain import PretrainStage
from weakwater.train.trainer import Trainer

from .test_trainer import make_cfg, metrics, run, weights


def test_checkpoint_manager_keeps_last_k_and_latest_points_to_newest(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        tmp = manager.begin(step)
        (tmp / "blob").write_bytes(bytes([step]) * 10)
        manager.commit(tmp, step)
    assert [p.name for p in manager.steps()] == ["step_0000003", "step_0000002"]
    assert manager.find_valid() == tmp_path / "step_0000003"
    (tmp_path / "step_0000003" / "blob").unlink()
    assert manager.find_valid(warn=lambda m: None) == tmp_path / "step_0000002"
    leftover = manager.begin(4)  # a crash here leaves only a hidden temp dir ...
    (leftover / "blob").write_bytes(b"x")
    assert manager.find_valid(warn=lambda m: None) == tmp_path / "step_0000002"  # ... which is never loaded


def test_corrupt_latest_checkpoint_falls_back_to_previous(shards, tmp_path, capsys):
    out = tmp_path / "run"
    run(make_cfg(shards, out), stop_at=15)  # checkpoints at 10 and 15 (interrupt)
    latest = next((out / "checkpoints" / "step_0000015" / "app").glob("*.distcp"))
    data = bytearray(latest.read_bytes())
    data[-5] ^= 0xFF
    latest.write_bytes(bytes(data))
    trainer = Trainer(make_cfg(shards, out, resume=True), PretrainStage(make_cfg(shards, out)))
    checkpoint.resume(trainer)
    assert trainer.step == 10
    err = capsys.readouterr().err
    assert "step_0000015" in err and "sha256 mismatch" in err and "previous" in err
    (out / "checkpoints" / "step_0000010" / "trainer.json").write_text("{}")
    with pytest.raises(ConfigError, match="every checkpoint .* failed verification"):
        checkpoint.resume(Trainer(make_cfg(shards, out, resume=True), PretrainStage(make_cfg(shards, out))))


def test_one_format_holds_the_whole_state_and_loads_back_exactly(shards, tmp_path):
    out = tmp_path / "run"
    trainer = run(make_cfg(shards, out, max_steps=6, save_every=0, eval_every=0, model={**make_cfg(shards, out).model,
                                                                                       "dropout": 0.1}))  # fmt: skip
    path = out / "checkpoints" / "step_0000006"
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    assert files == ["app/.metadata", "app/__0_0.distcp", "manifest.json", "rank_0.pt", "trainer.json"], files
    run_state = json.loads((path / "trainer.json").read_text())
    assert run_state["format"] == "weakwater-checkpoint" and run_state["step"] == 6
    assert run_state["config"]["max_steps"] == 6 and run_state["loader"]["global_batch"] == 8
    # a fresh trainer loaded from it holds the same weights, optimizer moments and RNG streams
    fresh = Trainer(make_cfg(shards, out, resume=True, max_steps=6, save_every=0, eval_every=0,
                             model=trainer.model_config.to_dict()), PretrainStage(make_cfg(shards, out)))  # fmt: skip
    checkpoint.load(fresh, path)
    a, b = trainer.model.state_dict(), fresh.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for opt_a, opt_b in zip(optimizers(trainer.optimizer), optimizers(fresh.optimizer), strict=True):  # Muon, AdamW
        sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
        assert sa and all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    assert torch.equal(torch.get_rng_state(), checkpoint.rng_state(fresh.ctx.generator, fresh.device)["torch"])
    assert fresh.loader.state_dict() == trainer.loader.state_dict() and fresh.step == 6


def test_an_old_format_checkpoint_is_refused_with_what_to_do(shards, tmp_path):
    old = tmp_path / "run" / "checkpoints" / "step_0000010"
    old.mkdir(parents=True)
    (old / "state.json").write_text("{}")
    (old / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="older weakwater version .* --init"):
        Trainer(make_cfg(shards, tmp_path / "run", resume=True), PretrainStage(make_cfg(shards, tmp_path / "run")))


def test_resume_reports_allowed_changes_and_refuses_ones_that_change_the_run(shards, tmp_path, capsys):
    out = tmp_path / "run"
    run(make_cfg(shards, out, max_steps=4, save_every=0, eval_every=0))
    capsys.readouterr()
    with pytest.raises(ConfigError, match=r"batch_size: 8 -> 4; lr: 0.003 -> 0.001.*--allow-config-change"):
        run(make_cfg(shards, out, resume=True, max_steps=6, batch_size=4, lr=1e-3))
    # extending the run is fine, and said
    longer = run(make_cfg(shards, out, resume=True, max_steps=6, save_every=0, eval_every=0))
    assert longer.step == 6
    assert "--resume: changed since step_0000004: max_steps: 4 -> 6" in capsys.readouterr().err
    events = [r for r in metrics(out) if r.get("event") == "config_change"]
    assert events[-1]["changes"] == ["max_steps: 4 -> 6"]
    # an explicit override continues with a refused change, and records it
    forced = run(make_cfg(shards, out, resume=True, max_steps=8, lr=1e-3, allow_config_change=True))
    assert forced.step == 8
    assert "lr: 0.003 -> 0.001 (allowed by --allow-config-change)" in capsys.readouterr().err
    assert weights(out / "final")
