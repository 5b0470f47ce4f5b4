"""The training engine on tiny CPU runs: learning, resume equality, accumulation, faults, outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from weakwater.model.io import load_model
from weakwater.train.config import TrainConfig
from weakwater.train.stages.pretrain import PretrainStage
from weakwater.train.trainer import Trainer

from .conftest import stop_after

TINY_MODEL = {"vocab_size": 64, "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64}


def make_cfg(shards: Path, out: Path, **overrides) -> TrainConfig:
    fields = dict(
        data=str(shards),
        out=str(out),
        batch_size=8,
        seq_len=32,
        lr=3e-3,
        warmup_steps=5,
        log_every=5,
        eval_every=10,
        eval_batches=4,
        save_every=10,
        max_steps=20,
        plot=False,
        model=dict(TINY_MODEL),
    )
    fields.update(overrides)
    return TrainConfig(**fields)


def run(cfg: TrainConfig, stop_at: int | None = None, stage=None) -> Trainer:
    """Train (pretraining unless ``stage``); with ``stop_at``, a SIGINT-equivalent after that step (like Ctrl-C)."""
    trainer = Trainer(cfg, stage if stage is not None else PretrainStage(cfg))
    if stop_at is not None:
        stop_after(trainer, stop_at)
    trainer.fit()
    return trainer


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_tiny_pretraining_loss_falls_and_writes_the_run_dir(shards, tmp_path):
    out = tmp_path / "run"
    trainer = run(make_cfg(shards, out, max_steps=40, save_every=20, eval_every=20, plot=True))
    losses = [r["loss"] for r in metrics(out) if "loss" in r]
    vals = [r["val_loss"] for r in metrics(out) if "val_loss" in r]
    assert losses[0] < math.log(64) + 0.1
    assert losses[-1] < losses[0] - 0.8, losses
    assert vals[-1] < math.log(64) - 0.8, vals
    assert all(r["tokens_per_s"] > 0 for r in metrics(out) if "loss" in r)
    model = load_model(out / "final")  # a normal saved model dir, sha256-verified
    assert model.config.dim == TINY_MODEL["dim"]
    assert json.loads((out / "final" / "config.json").read_text())["step"] == 40
    assert (out / "best" / "model.safetensors").exists() and (out / "loss.png").stat().st_size > 1000
    assert json.loads((out / "config.json").read_text())["max_steps"] == 40
    assert [p.name for p in trainer.ckpt.steps()] == ["step_0000040", "step_0000020"]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_0000040"


def test_interrupted_run_resumes_bitwise_equal(shards, tmp_path):
    # dropout on so the torch RNG state matters too
    model = dict(TINY_MODEL, dropout=0.1)
    run(make_cfg(shards, tmp_path / "full", model=model))
    part = run(make_cfg(shards, tmp_path / "part", model=model), stop_at=7)
    assert part.interrupted and part.step == 7
    assert not (tmp_path / "part" / "final").exists()
    resumed = run(make_cfg(shards, tmp_path / "part", model=model, resume=True))
    assert resumed.step == 20
    a, b = weights(tmp_path / "full" / "final"), weights(tmp_path / "part" / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in metrics(tmp_path / "part") if "loss" in r]
    assert steps == sorted(set(steps)), "records after the checkpoint must not be duplicated"

    # validation losses are exact; train-loss records after step 10 cover the same steps again
    def records(out):
        return [
            (r["step"], r.get("val_loss", r.get("loss"))) for r in metrics(out) if r["step"] > 10 or "val_loss" in r
        ]

    assert records(tmp_path / "full") == records(tmp_path / "part")


def test_muon_wsd_run_resumes_bitwise_equal(shards, tmp_path):
    kw = dict(optimizer="muon", schedule="wsd", max_steps=12, save_every=6, eval_every=6)
    run(make_cfg(shards, tmp_path / "full", **kw))
    part = run(make_cfg(shards, tmp_path / "part", **kw), stop_at=5)
    assert part.interrupted
    run(make_cfg(shards, tmp_path / "part", resume=True, **kw))
    a, b = weights(tmp_path / "full" / "final"), weights(tmp_path / "part" / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_accumulation_equals_one_big_batch(shards, tmp_path):
    # AdamW: Muon orthogonalises in bfloat16, which turns float rounding of the summed gradients into 1e-4 steps
    same = dict(max_steps=6, eval_every=0, optimizer="adamw")
    big = run(make_cfg(shards, tmp_path / "big", batch_size=8, grad_accum=1, **same))
    acc = run(make_cfg(shards, tmp_path / "acc", batch_size=4, grad_accum=2, **same))
    a, b = weights(big.out / "final"), weights(acc.out / "final")
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff < 1e-5, diff


class NaNStage(PretrainStage):
    """Pretraining whose loss is NaN on chosen training-step attempts (0-based; one micro-batch per step)."""

    def __init__(self, cfg, poisoned):
        super().__init__(cfg)
        self.calls, self.poisoned = 0, set(poisoned)

    def loss(self, model, batch, *, train):
        total, count, extra = super().loss(model, batch, train=train)
        if train:
            if self.calls in self.poisoned:
                total = total * float("nan")
            self.calls += 1
        return total, count, extra


def test_nan_steps_are_skipped_counted_and_rolled_back(shards, tmp_path):
    # attempts 12..14 are poisoned: three consecutive bad steps after the step-10 checkpoint
    cfg = make_cfg(shards, tmp_path / "run", max_bad_steps=3)
    trainer = Trainer(cfg, NaNStage(cfg, {12, 13, 14}))
    trainer.fit()
    assert trainer.step == 20
    assert trainer.counters["bad_steps"] == 3 and trainer.counters["rollbacks"] == 1
    assert trainer.lr_scale == 0.5
    events = [r for r in metrics(tmp_path / "run") if r.get("event") in ("bad_step", "rollback")]
    assert [e["event"] for e in events] == ["bad_step"] * 3 + ["rollback"]
    assert events[-1]["step"] == 10 and events[-1]["to"].endswith("step_0000010")
    for value in weights(tmp_path / "run" / "final").values():
        assert torch.isfinite(value).all()


def test_single_nan_step_is_skipped_without_rollback(shards, tmp_path):
    cfg = make_cfg(shards, tmp_path / "run", max_steps=8, eval_every=0, save_every=0)
    stage = NaNStage(cfg, {3})
    trainer = Trainer(cfg, stage)
    trainer.fit()
    assert trainer.counters["bad_steps"] == 1 and trainer.counters["rollbacks"] == 0
    assert trainer.lr_scale == 1.0 and stage.calls == 9


class CopyStage:
    """A stage from outside the package: its own dataset, collator and loss with an extra metric."""

    name = "copy"

    def datasets(self):
        g = torch.Generator().manual_seed(0)
        items = [torch.randint(1, 64, (17,), generator=g) for _ in range(64)]
        return items, items[:16]

    def collate(self, samples):
        x = torch.stack(samples)
        return {"input_ids": x[:, :-1], "labels": (x[:, :-1] + 1) % 64}  # "add one": quick to learn

    def loss(self, model, batch, *, train):
        logits = model(batch["input_ids"])
        total = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), reduction="sum")
        accuracy = (logits.argmax(-1) == batch["labels"]).float().mean()
        return total, torch.tensor(float(batch["labels"].numel())), {"accuracy": accuracy}

    def evaluate(self, ctx):
        return {"copy_eval": 1.0}


def test_any_stage_plugs_in_and_its_metrics_are_logged(shards, tmp_path):
    cfg = make_cfg(shards, tmp_path / "run", max_steps=30, eval_every=15, save_every=0, lr=1e-2)
    Trainer(cfg, CopyStage()).fit()
    records = metrics(tmp_path / "run")
    accuracy = [r["accuracy"] for r in records if "accuracy" in r]
    assert len(accuracy) == 6 and accuracy[-1] > accuracy[0] + 0.3, accuracy
    assert [r["copy_eval"] for r in records if "copy_eval" in r] == [1.0, 1.0]
    # the loss's metrics on validation batches are logged as val_<name>
    val_accuracy = [r["val_accuracy"] for r in records if "val_accuracy" in r]
    assert len(val_accuracy) == 2 and val_accuracy[-1] > val_accuracy[0], val_accuracy


class SpikyStage(PretrainStage):
    """Pretraining whose loss is multiplied by 20 on chosen micro-batches (a bad-data burst)."""

    def __init__(self, cfg, spikes):
        super().__init__(cfg)
        self.calls, self.spikes = 0, spikes

    def loss(self, model, batch, *, train):
        total, count, extra = super().loss(model, batch, train=train)
        if train:
            self.calls += 1
            if self.calls in self.spikes:
                total = total * 20
        return total, count, extra


def test_loss_spikes_are_detected_and_logged(shards, tmp_path, capsys):
    cfg = make_cfg(shards, tmp_path / "run", max_steps=12, log_every=1, eval_every=0, save_every=0)
    trainer = Trainer(cfg, SpikyStage(cfg, spikes={9}))
    trainer.fit()
    spikes = [r["step"] for r in metrics(tmp_path / "run") if r.get("spike")]
    assert spikes == [9] and trainer.counters["spikes"] == 1
    assert "loss spike at step 9" in capsys.readouterr().err


def test_spike_factor_zero_turns_spike_detection_off(shards, tmp_path, capsys):
    cfg = make_cfg(shards, tmp_path / "run", max_steps=12, log_every=1, eval_every=0, save_every=0, spike_factor=0)
    trainer = Trainer(cfg, SpikyStage(cfg, spikes={9}))
    trainer.fit()
    assert not any(r.get("spike") for r in metrics(tmp_path / "run")) and not trainer.counters["spikes"]
    assert "loss spike" not in capsys.readouterr().err
