"""Experiment trackers, offline: what each one stored, read back from its own files, equals what the
run wrote to metrics.jsonl (same steps, same values)."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from weakwater.train.tracking import loss_figure, plot_curves

from .test_trainer import make_cfg, metrics, run


def train_with(tracker: str, shards: Path, out: Path) -> dict[tuple[str, int], float]:
    """A 10-step run logging every 5 steps and evaluating at 5 and 10; returns metrics.jsonl as
    {(tracker key, step): value} for the training loss, the learning rate and the validation loss."""
    run(make_cfg(shards, out, max_steps=10, eval_every=5, save_every=0, tracker=tracker))
    expected = {}
    for record in metrics(out):
        for key, name in (("loss", "train/loss"), ("lr", "train/lr"), ("val_loss", "val/val_loss")):
            if key in record:
                expected[(name, record["step"])] = record[key]
    assert {step for _, step in expected} == {5, 10} and len(expected) == 6
    return expected


def leveldb_log_records(path: Path) -> list[bytes]:
    """Payloads of a LevelDB log file (32 KiB blocks of [crc32 4][length 2][type 1] records), the format
    both wandb's ``.wandb`` and swanlab's ``.swanlab`` files use after their 7-byte file header."""
    data, pos, block, out, pending = path.read_bytes(), 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is zero padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        payload, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:  # FULL
            out.append(payload)
        elif kind == 2:  # FIRST
            pending = payload
        elif kind == 3:  # MIDDLE
            pending += payload
        elif kind == 4:  # LAST
            out.append(pending + payload)
    return out


def tensorboard_scalars(out: Path) -> dict[tuple[str, int], float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    return {(tag, e.step): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}


def wandb_scalars(out: Path) -> dict[tuple[str, int], float]:
    from wandb.proto import wandb_internal_pb2

    found: dict[tuple[str, int], float] = {}
    deadline = time.monotonic() + 30
    while not found and time.monotonic() < deadline:  # wandb's service process may still be flushing the file
        for path in out.glob("wandb/offline-run-*/run-*.wandb"):
            for payload in leveldb_log_records(path):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(payload)
                if record.WhichOneof("record_type") == "history":
                    step = record.history.step.num
                    for item in record.history.item:
                        found[(item.key or "/".join(item.nested_key), step)] = json.loads(item.value_json)
        time.sleep(0 if found else 1)
    return found


def swanlab_scalars(out: Path) -> dict[tuple[str, int], float]:
    from swanlab.proto.swanlab.record.v1 import record_pb2

    (path,) = out.glob("swanlog/run-*/run-*.swanlab")
    found = {}
    for payload in leveldb_log_records(path):
        record = record_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "scalar":
            found[(record.scalar.key, record.scalar.step)] = record.scalar.value.number
    return found


READERS = {"tensorboard": tensorboard_scalars, "wandb": wandb_scalars, "swanlab": swanlab_scalars}


@pytest.mark.slow
@pytest.mark.parametrize("kind", READERS)
def test_tracker_holds_the_logged_values(shards, tmp_path, monkeypatch, kind):
    pytest.importorskip(kind, reason=f"{kind} not installed (optional extra 'tracking')")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    expected = train_with(kind, shards, out)
    stored = READERS[kind](out)
    for key, value in expected.items():
        assert key in stored, f"{kind} has no {key[0]} at step {key[1]}"
        assert stored[key] == pytest.approx(value, rel=1e-6), key  # tensorboard stores float32


def test_log_axis_labels_are_plain_numbers(tmp_path):
    """Losses span about one decade, where matplotlib's default labels read 8×10⁰; ours read 8."""
    records = [{"step": i, "loss": 9 * 0.99**i, "lr": 1e-3} for i in range(200)]
    fig = loss_figure(records, "pretrain (run)")
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
    assert {"2", "3", "4"} <= set(labels)
    assert all(label.replace(".", "").isdigit() for label in labels), labels
    assert plot_curves(records, tmp_path / "loss.png", "t") == tmp_path / "loss.png"
    assert plot_curves([], tmp_path / "none.png", "t") is None
