"""``weakwater bench gpu`` in its reduced CPU form: every section runs, a failing one is reported, the loss falls."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from weakwater.bench import gpu
from weakwater.cli import main


def test_synthetic_tokens_have_the_stated_structure():
    tokens = gpu.synthetic_tokens(vocab=6400, n=50_000, seed=0, successors=4, used=256)
    assert tokens.dtype == np.uint16 and len(np.unique(tokens)) <= 256
    successors: dict[int, set[int]] = {}
    for a, b in zip(tokens[:-1], tokens[1:]):
        successors.setdefault(int(a), set()).add(int(b))
    assert max(len(s) for s in successors.values()) <= 4  # each token has at most 4 next tokens


def test_a_failing_section_is_reported_and_the_others_run(tmp_path):
    plan = gpu.Plan(("tiny",), 16, (2,), 4, 1.0, 60.0, compile=False)
    bench = gpu.GpuBench(torch.device("cpu"), torch.float32, plan, seed=0, data=None)

    def broken(check):
        raise RuntimeError("kernel exploded")

    bench.run("broken", broken)
    bench.run("sdpa", bench.sdpa)
    bench.deadline = 0.0
    bench.run("late", bench.sdpa)
    by_name = {c.name: c for c in bench.checks}
    assert by_name["broken"].status == "failed" and "kernel exploded" in by_name["broken"].summary
    assert by_name["sdpa"].status == "ok" and "flash" in by_name["sdpa"].summary
    assert by_name["late"].status == "skipped" and "budget" in by_name["late"].summary


@pytest.mark.slow
def test_reduced_run_passes_every_check(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WEAKWATER_NO_PROGRESS", "1")
    out, md = tmp_path / "gpu.json", tmp_path / "gpu.md"
    args = [
        "bench",
        "gpu",
        "--device",
        "cpu",
        "--no-compile",
        "--seq",
        "32",
        "--pretrain-seconds",
        "4",
        "--budget",
        "1800",
    ]
    assert main([*args, "--json", str(out), "--md", str(md)]) == 0
    result = json.loads(out.read_text())
    checks = {c["name"]: c for c in result["checks"]}
    assert list(checks) == ["paths", "sdpa", "ddp", "loader", "mfu tiny", "decode", "pretrain"]
    assert all(c["status"] == "ok" for c in checks.values()), checks
    assert checks["ddp"]["data"]["max_grad_diff_vs_no_ddp"] == 0.0  # one process: DDP's all-reduce is the identity
    assert checks["loader"]["data"]["loader_over_step"] > 1
    pre = checks["pretrain"]["data"]
    assert pre["first_loss"] > math.log(256) and pre["last_loss"] < pre["first_loss"] - 0.5
    assert all(r["ours_tok_s"] > 0 and r["hf_tok_s"] > 0 for r in checks["decode"]["data"]["results"])
    table = md.read_text()
    assert table.count("\n| ") == 1 + len(checks) and "| pretrain | ok |" in table
    assert result["doctor"]["sdpa"]["causal"]["backend"] and result["passed"] is True
