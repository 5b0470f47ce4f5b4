"""Kill tiny training subprocesses (SIGKILL at random points, also mid-checkpoint) and resume them.

The run that survives the kills must end with weights bitwise equal to an uninterrupted run (CPU,
fp32, dropout on), and after every kill the checkpoint ``latest`` names must verify and load.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.distributed.checkpoint import FileSystemReader

from weakwater.train.checkpoint import CheckpointManager, read_trainer_state
from weakwater.train.stages.pretrain import PretrainStage
from weakwater.train.trainer import Trainer

SCRIPT = Path(__file__).with_name("tiny_run.py")
REPO = Path(__file__).resolve().parents[2]
RUN_ARGS = [
    "max_steps=24",
    "save_every=3",
    "eval_every=0",
    "plot=false",
    'model={"vocab_size": 64, "dim": 32, '
    '"n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64, "dropout": 0.1}',
]


def start(shards: Path, out: Path, *extra: str, **env: str) -> subprocess.Popen:
    environment = {**os.environ, "WEAKWATER_NO_PROGRESS": "1", "PYTHONPATH": str(REPO), **env}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(shards), str(out), *RUN_ARGS, *extra],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            return
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("training subprocess made no progress")
        time.sleep(0.02)


def latest_step(out: Path) -> int:
    pointer = out / "checkpoints" / "latest"
    return int(pointer.read_text().strip().removeprefix("step_")) if pointer.exists() else -1


def assert_latest_loads(out: Path) -> None:
    pointer = out / "checkpoints" / "latest"
    if not pointer.exists():
        return
    path = out / "checkpoints" / pointer.read_text().strip()
    CheckpointManager.verify(path)  # raises on a missing or corrupt file
    assert read_trainer_state(path)["step"] == int(path.name.removeprefix("step_"))
    FileSystemReader(str(path / "app")).read_metadata()  # model + optimizer readable


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_matches_uninterrupted_run(shards, tmp_path):
    # the uninterrupted reference runs in this process (same config, one thread, like the subprocesses)
    spec = importlib.util.spec_from_file_location("tiny_run", SCRIPT)
    tiny_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_run)
    cfg = tiny_run.build_config(str(shards), str(tmp_path / "reference"), RUN_ARGS)
    Trainer(cfg, PretrainStage(cfg)).fit()

    out = tmp_path / "killed"
    rng = random.Random(7)
    kills = mid_save_kills = 0
    for attempt in range(5):
        mid_save = attempt % 2 == 1
        env = {"TINY_STEP_PAUSE": "0.05"}
        if mid_save:
            env["TINY_SAVE_PAUSE"] = "0.6"
        proc = start(shards, out, "resume=true", **env)
        before = latest_step(out)
        if mid_save:  # kill while a checkpoint's temp dir exists (inside one of the two pauses)
            wait_for(lambda: any((out / "checkpoints").glob(".tmp-step_*")), proc)
            time.sleep(rng.uniform(0.0, 1.0))
        else:  # kill at a random moment after the run made progress
            wait_for(lambda b=before: latest_step(out) > b, proc)
            time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            writing = any((out / "checkpoints").glob(".tmp-step_*"))
            proc.send_signal(signal.SIGKILL)
            kills += 1
            mid_save_kills += writing
        proc.wait(timeout=60)
        assert_latest_loads(out)
    print(f"SIGKILLs survived: {kills} ({mid_save_kills} during a checkpoint write)")
    assert kills >= 4 and mid_save_kills >= 1, (kills, mid_save_kills)
    final = start(shards, out, "resume=true")
    assert final.wait(timeout=300) == 0, final.stdout.read().decode()

    a = load_file(str(tmp_path / "reference" / "final" / "model.safetensors"))
    b = load_file(str(out / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    events = [json.loads(line).get("event") for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert events.count("resume") >= 4


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(shards, tmp_path):
    out = tmp_path / "run"
    proc = start(shards, out, "max_steps=1000", "save_every=0", TINY_STEP_PAUSE="0.05")
    wait_for(lambda: (out / "metrics.jsonl").exists() and "loss" in (out / "metrics.jsonl").read_text(), proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    step = latest_step(out)
    assert 5 <= step < 1000
    assert_latest_loads(out)
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "interrupted" and last["signal"] == signal.SIGTERM and last["step"] == step


@pytest.mark.slow
def test_ctrl_c_with_output_piped_into_a_dead_reader_still_saves(shards, bpe_tokenizer_dir, tmp_path):
    """`weakwater pretrain ... 2>&1 | tee log`, then Ctrl-C (which also kills tee): the run keeps going
    after its reader died, and SIGINT still writes the checkpoint and records the interruption."""
    out = tmp_path / "run"
    env = {
        **os.environ,
        "WEAKWATER_PROGRESS_SECONDS": "0",  # a progress line after every step: writes keep hitting the pipe
        "WEAKWATER_TEST_STEP_PAUSE": "0.05",
        "PYTHONPATH": str(REPO),
    }
    env.pop("WEAKWATER_NO_PROGRESS", None)
    cmd = [sys.executable, "-m", "weakwater", "pretrain", "--data", str(shards), "--out", str(out)]
    cmd += ["--tokenizer", str(bpe_tokenizer_dir)]
    cmd += ["--seq-len", "32", "--batch-size", "2", "--max-steps", "100000", "--save-every", "0", "--eval-every", "0"]
    cmd += ["--log-every", "1", "--no-plot"]
    cmd += ["--model-arg", "dim=32", "--model-arg", "n_layers=1", "--model-arg", "n_heads=2"]
    cmd += ["--model-arg", "n_kv_heads=1"]
    trainer = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    reader = subprocess.Popen(["head", "-c", "1"], stdin=trainer.stdout, stdout=subprocess.DEVNULL)
    trainer.stdout.close()  # only the reader holds the pipe now: when it exits, the pipe is dead
    try:
        assert reader.wait(timeout=120) == 0
        metrics = out / "metrics.jsonl"
        deadline = time.monotonic() + 120
        steps = 0
        while steps < 20 and time.monotonic() < deadline:  # still training after the pipe died
            assert trainer.poll() is None, "the trainer died with its reader"
            time.sleep(0.2)
            lines = metrics.read_text().splitlines() if metrics.exists() else []
            steps = max([json.loads(line).get("step", 0) for line in lines[:-1]] or [0])  # last may be partial
        assert steps >= 20
        trainer.send_signal(signal.SIGINT)
        assert trainer.wait(timeout=120) == 130
    finally:
        if trainer.poll() is None:
            trainer.kill()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "interrupted"
    latest = (out / "checkpoints" / "latest").read_text().strip()
    from weakwater.model.io import current_umask

    files = [f for f in (out / "checkpoints" / latest).rglob("*") if f.is_file()]
    assert files and {f.stat().st_mode & 0o777 for f in files} == {0o666 & ~current_umask()}
