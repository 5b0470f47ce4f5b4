"""One device/dtype/autocast choice: the rules, and every command applying the same ones."""

from __future__ import annotations

import contextlib

import pytest
import torch

from weakwater import device as wwdevice
from weakwater.cli import main
from weakwater.device import autocast, dtype_name, pick_device, pick_dtype, valid_device_name


@pytest.fixture
def machine(monkeypatch):
    """Pretend the machine has (or lacks) CUDA / MPS / bf16: ``machine(cuda=True, mps=False, bf16=True)``."""

    def set_machine(cuda: bool = False, mps: bool = False, bf16: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(wwdevice, "mps_available", lambda: mps)

    return set_machine


@pytest.mark.parametrize(
    "cuda,mps,local_rank,expected",
    [
        (True, True, 0, torch.device("cuda", 0)),
        (True, False, 3, torch.device("cuda", 3)),  # each torchrun rank its own GPU
        (False, True, 0, torch.device("mps")),
        (False, False, 0, torch.device("cpu")),
    ],
)
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda, mps, local_rank, expected):
    machine(cuda=cuda, mps=mps)
    assert pick_device("auto", local_rank) == expected


def test_explicit_devices(machine):
    machine(cuda=True, mps=True)
    assert pick_device("cuda", local_rank=2) == torch.device("cuda", 2)
    assert pick_device("cuda:1", local_rank=2) == torch.device("cuda", 1)  # an explicit index wins
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("mps") == torch.device("mps")


def test_missing_or_unknown_devices_are_refused(machine):
    machine(cuda=False, mps=False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda:0")
    with pytest.raises(ValueError, match="MPS is not available"):
        pick_device("mps")
    with pytest.raises(ValueError, match="--device must be"):
        pick_device("tpu")
    assert [valid_device_name(n) for n in ("auto", "cuda:12", "cuda:", "cuda:x", "gpu")] == [
        True,
        True,
        False,
        False,
        False,
    ]


@pytest.mark.parametrize(
    "device,bf16,expected",
    [("cuda", True, torch.bfloat16), ("cuda", False, torch.float16), ("cpu", True, torch.float32)],
)
def test_auto_dtype(machine, device, bf16, expected):
    machine(cuda=True, bf16=bf16)
    assert pick_dtype("auto", torch.device(device)) == expected


def test_explicit_dtypes():
    cpu = torch.device("cpu")
    assert [pick_dtype(n, cpu) for n in ("fp32", "bf16")] == [torch.float32, torch.bfloat16]
    assert pick_dtype("fp16", torch.device("cuda")) == torch.float16
    assert pick_dtype("fp16", cpu) == torch.float16  # CPU autocast + CPU GradScaler
    with pytest.raises(ValueError, match="--dtype must be one of"):
        pick_dtype("fp8", cpu)
    assert [dtype_name(d) for d in (torch.float32, torch.bfloat16, torch.float16)] == ["fp32", "bf16", "fp16"]


def test_autocast_casts_matmuls_except_in_fp32():
    cpu = torch.device("cpu")
    a = torch.randn(4, 4)
    assert isinstance(autocast(cpu, torch.float32), contextlib.nullcontext)
    with autocast(cpu, torch.float32):
        assert (a @ a).dtype == torch.float32
    with autocast(cpu, torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "argv",
    [
        ["chat", "--prompt", "hi", "--max-new-tokens", "1"],
        ["eval", "ppl", "--data", "unused.jsonl"],
        ["bench", "train", "--preset", "tiny", "--steps", "1"],
    ],
    ids=["chat", "eval", "bench"],
)
def test_every_command_applies_the_same_rules(machine, make_model_dir, tmp_path, capsys, argv):
    """A GPU asked for on a machine without one is the same one-line error in every command."""
    machine(cuda=False, mps=False)
    model_dir = make_model_dir(tmp_path / "m")
    extra = [] if argv[0] == "bench" else ["--model", str(model_dir)]
    assert main([*argv, *extra, "--device", "cuda"]) == 2
    assert "--device cuda: CUDA is not available on this machine" in capsys.readouterr().err
