"""Saved model directories: exact round trip, tied weights stored once, tokenizer files carried along,
and every damaged directory refused with a message that names the file."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file

from weakwater.export.hf import export_hf
from weakwater.model import ModelConfig, Transformer, load_model, save_model
from weakwater.model.io import file_sha256, read_model_config
from weakwater.model.lora import apply_lora, save_adapter

SHAPE = dict(vocab_size=300, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_save_load_round_trip_is_exact(tmp_path, bpe_tokenizer_dir, tie):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**SHAPE, tie_embeddings=tie)).eval()
    out = save_model(model, tmp_path / "m", tokenizer_dir=bpe_tokenizer_dir, extra={"stage": "sft"})
    loaded = load_model(out).eval()
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    ids = torch.randint(0, 300, (1, 20))
    with torch.no_grad():
        assert torch.equal(model(ids), loaded(ids))
    stored = load_file(str(out / "model.safetensors"))
    assert ("lm_head.weight" in stored) is not tie  # a tied head is stored once, as the embedding
    if tie:
        assert loaded.lm_head.weight is loaded.embed_tokens.weight  # and re-tied on load
    _, meta = read_model_config(out)
    assert meta["stage"] == "sft"
    assert meta["weights_sha256"] == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    assert (out / "tokenizer.json").read_bytes() == (bpe_tokenizer_dir / "tokenizer.json").read_bytes()
    assert not (tmp_path / "m.tmp").exists() and not (tmp_path / "m.old").exists()


def test_saving_again_replaces_the_directory(tmp_path):
    first = Transformer(ModelConfig(**SHAPE))
    out = save_model(first, tmp_path / "m")
    (out / "stale.txt").write_text("from the previous save")
    torch.manual_seed(1)
    second = Transformer(ModelConfig(**SHAPE))
    save_model(second, out)
    assert not (out / "stale.txt").exists()
    assert torch.equal(load_model(out).embed_tokens.weight, second.embed_tokens.weight)


def test_file_sha256_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 5000)  # several read chunks
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_damaged_directories_are_refused_by_name(tmp_path):
    out = save_model(Transformer(ModelConfig(**SHAPE)), tmp_path / "m")
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.safetensors: checksum mismatch"):
        load_model(out)
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="unreadable safetensors"):
        load_model(out, verify=False)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="missing model.safetensors"):
        load_model(out)
    (out / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="config.json: invalid JSON"):
        read_model_config(out)
    (out / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a WeakWater model config"):
        read_model_config(out)
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        read_model_config(tmp_path / "nowhere")


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    out = save_model(Transformer(ModelConfig(**SHAPE)), tmp_path / "m")
    meta = json.loads((out / "config.json").read_text())
    meta["model"]["n_layers"] = 3
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="weights do not match config"):
        load_model(out)


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
