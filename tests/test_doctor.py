"""``weakwater doctor`` reports what it probes: checked against torch itself and against forced kernels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from weakwater import doctor
from weakwater.cli import main


def test_json_report_agrees_with_torch(capsys):
    assert main(["doctor", "--json", "--skip-compile"]) == 0
    report = json.loads(capsys.readouterr().out)
    acc = report["accelerator"]
    assert acc["cuda_available"] == torch.cuda.is_available()
    if not torch.cuda.is_available() and not acc["mps_available"]:
        assert acc["device"] == "cpu" and report["sdpa"]["dtype"] == "fp32"
    assert report["distributed"]["gloo"] == torch.distributed.is_gloo_available()
    assert report["compile"] == {"skipped": True}
    assert report["fused_adamw"]["works"] is True  # fused AdamW exists for CPU and CUDA in torch >= 2.4
    flags = (
        Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0]
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    for feature, present in report["cpu"]["features"].items():
        assert present == (f" {feature} " in flags + " ")
    assert report["disk"]["disk_free_gib"] > 0 and report["recommended"]


def test_text_report_names_every_probe(capsys):
    assert main(["doctor", "--skip-compile"]) == 0
    text = capsys.readouterr().out
    for needle in ("device:", "bf16:", "SDPA kernel (causal", "SDPA kernel (masked", "torch.compile: not checked"):
        assert needle in text
    assert "fused AdamW: yes" in text and "recommended:" in text


def test_sdpa_probe_sees_the_kernel_that_runs():
    """Forcing the math kernel must be reported as math; the default on CPU is the fused flash kernel."""
    with sdpa_kernel([SDPBackend.MATH]):
        forced = doctor.sdpa_backend(torch.device("cpu"), torch.float32, masked=False)
    assert forced["backend"] == "math"
    default = doctor.sdpa_backend(torch.device("cpu"), torch.float32, masked=True)
    assert default["backend"] == "flash (CPU)"
    assert "_scaled_dot_product_flash_attention_for_cpu_backward" in default["ops"]


def test_compile_probe_reports_a_missing_compiler(monkeypatch):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    result = doctor.compile_check(torch.device("cpu"))
    assert result["works"] is False and "compiler" in result["error"]


@pytest.mark.slow
def test_compile_probe_compiles():
    result = doctor.compile_check(torch.device("cpu"))
    assert result == {"works": True, "seconds": pytest.approx(result["seconds"])}
