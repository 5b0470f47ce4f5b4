"""torchrun on CPU with gloo: 2 processes x batch b must follow the 1-process x batch 2b trajectory
(DDP and FSDP2), a 2-process run must resume from its own (sharded, for FSDP) checkpoints, and a run
checkpointed with 2 processes resumes with 1 (and 1 with 2) at the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from weakwater.train.config import TrainConfig
from weakwater.train.stages.pretrain import PretrainStage
from weakwater.train.trainer import Trainer

SCRIPT = Path(__file__).with_name("tiny_run.py")
REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = {"vocab_size": 64, "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64}
COMMON = dict(seq_len=32, lr=3e-3, warmup_steps=2, log_every=1, eval_every=3, eval_batches=2, plot=False)
# Sums are reduced in a different order across 2 ranks than inside 1 process: equal up to float rounding.
TOLERANCE = 1e-5


def launch(shards: Path, out: Path, *extra: str, nproc: int = 2, **env: str) -> subprocess.Popen:
    env = {**os.environ, "WEAKWATER_NO_PROGRESS": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env}
    args = [f"{k}={json.dumps(v)}" for k, v in COMMON.items()]
    cmd = [sys.executable, str(SCRIPT)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *cmd[1:]]
    return subprocess.Popen(
        [*cmd, str(shards), str(out), "batch_size=8", *args, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def torchrun(shards: Path, out: Path, *extra: str, nproc: int = 2, **env: str) -> None:
    proc = launch(shards, out, *extra, nproc=nproc, **env)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]


def losses(out: Path) -> dict[tuple[int, str], float]:
    """{(step, "loss" | "val_loss"): value} from a run's metrics.jsonl."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {(r["step"], key): r[key] for r in records for key in ("loss", "val_loss") if key in r}


def single_process(shards: Path, out: Path, max_steps: int, **over: Any) -> Path:
    cfg = TrainConfig(
        data=str(shards),
        out=str(out),
        batch_size=16,
        max_steps=max_steps,
        save_every=0,
        model=dict(TINY_MODEL),
        **COMMON,
        **over,
    )
    return Trainer(cfg, PretrainStage(cfg)).fit()


def assert_same_trajectory(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    diff = max(abs(a[k] - b[k]) for k in a)
    print(f"max |loss difference| 2 processes vs 1 process: {diff:.3g}")
    assert diff < TOLERANCE, (diff, a, b)
    return diff


def resume_after_dropping_last_checkpoint(shards: Path, out: Path, last: str, *extra: str) -> None:
    """Forget the newest checkpoint and the final model, resume, and expect the same final weights."""
    before = load_file(str(out / "final" / "model.safetensors"))
    shutil.rmtree(out / "checkpoints" / last)
    shutil.rmtree(out / "final")
    torchrun(shards, out, "resume=true", *extra)
    after = load_file(str(out / "final" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(json.loads(line).get("event") == "resume" for line in (out / "metrics.jsonl").read_text().splitlines())


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_and_resume(shards, tmp_path):
    single_process(shards, tmp_path / "one", max_steps=6)
    torchrun(shards, tmp_path / "ddp", "max_steps=6", "save_every=3")
    assert_same_trajectory(losses(tmp_path / "one"), losses(tmp_path / "ddp"))

    # SIGTERM to torchrun reaches both ranks: they agree to stop, checkpoint once and exit without hanging
    out = tmp_path / "stopped"
    proc = launch(shards, out, "max_steps=6", "save_every=0", TINY_STEP_PAUSE="0.5")
    deadline = time.monotonic() + 120
    while not ((out / "metrics.jsonl").exists() and '"loss"' in (out / "metrics.jsonl").read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "interrupted" and 1 <= last["step"] < 6
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step_{last['step']:07d}"
    torchrun(shards, out, "max_steps=6", "save_every=0", "resume=true")
    a = load_file(str(tmp_path / "ddp" / "final" / "model.safetensors"))
    b = load_file(str(out / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_fsdp2_two_processes_match_one_process_and_resume_from_sharded_checkpoint(shards, tmp_path):
    single_process(shards, tmp_path / "one", max_steps=4, optimizer="adamw")  # Muon needs whole matrices
    fsdp = ("max_steps=4", "save_every=2", "fsdp=true", 'optimizer="adamw"')
    torchrun(shards, tmp_path / "fsdp", *fsdp)
    assert_same_trajectory(losses(tmp_path / "one"), losses(tmp_path / "fsdp"))
    assert list((tmp_path / "fsdp" / "checkpoints" / "step_0000002" / "app").glob("*.distcp"))
    resume_after_dropping_last_checkpoint(shards, tmp_path / "fsdp", "step_0000004", *fsdp)


def trained_samples(log: Path) -> list[int]:
    """Dataset indices of every training micro-batch in a TINY_SAMPLE_LOG, all ranks."""
    return [int(i) for line in log.read_text().splitlines() for i in line.split()[1].split(",")]


@pytest.mark.slow
def test_resume_on_another_process_count_at_the_same_global_batch(shards, tmp_path):
    # warmup covers the first 3 steps, so their learning rate does not depend on max_steps (3, then 6)
    steps = ("warmup_steps=3", "save_every=0")
    torchrun(shards, tmp_path / "ref", "max_steps=6", "batch_size=16", *steps, nproc=1,
             TINY_SAMPLE_LOG=str(tmp_path / "ref.log"))  # fmt: skip
    reference, expected = losses(tmp_path / "ref"), sorted(trained_samples(tmp_path / "ref.log"))
    assert len(expected) == len(set(expected)) == 6 * 16
    for before, after in ((2, 1), (1, 2)):
        out, log = tmp_path / f"{before}to{after}", str(tmp_path / f"{before}to{after}.log")
        torchrun(shards, out, "max_steps=3", f"batch_size={16 // before}", *steps, nproc=before, TINY_SAMPLE_LOG=log)
        torchrun(shards, out, "max_steps=6", f"batch_size={16 // after}", *steps, "resume=true", nproc=after,
                 TINY_SAMPLE_LOG=log)  # fmt: skip
        seen = trained_samples(Path(log))
        assert sorted(seen) == expected, "a sample of the epoch was trained twice or skipped"
        assert_same_trajectory(reference, losses(out))
        changes = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "changes" in r]
        assert f"processes: {before} -> {after} at the same global batch 16" in changes[-1]["changes"]
