"""Saved model directories: file permissions follow the umask like any other file."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from weakwater.export.hf import export_hf
from weakwater.model import ModelConfig, Transformer
from weakwater.model.lora import apply_lora, save_adapter


def _modes(root):
    return {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_files_respect_umask(tmp_path, make_model_dir, umask):
    """safetensors alone writes 0600; a saved model, an adapter and an HF export must be shareable
    (0644 under umask 022) and stay private under umask 077."""
    old = os.umask(umask)
    try:
        model_dir = make_model_dir(tmp_path / "m")
        hf_dir = export_hf(model_dir, tmp_path / "hf")
        model = Transformer(ModelConfig(vocab_size=64, dim=32, n_layers=1, n_heads=2, n_kv_heads=1))
        apply_lora(model, 2, 4.0)
        adapter_dir = save_adapter(model, tmp_path / "adapter")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    for root in (model_dir, hf_dir, adapter_dir):
        modes = _modes(root)
        assert any(name.endswith(".safetensors") for name in modes)
        assert modes == dict.fromkeys(modes, expected), (root, modes)


def test_umask_unchanged_after_save(tmp_path):
    from weakwater.model.io import save_safetensors

    old = os.umask(0o027)
    try:
        save_safetensors({"w": torch.zeros(2)}, tmp_path / "w.safetensors")
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)
