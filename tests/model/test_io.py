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


@pytest.mark.parametrize(
    "overrides",
    [{}, {"tie_embeddings": True, "rope_scaling": {"kind": "yarn", "factor": 2.0, "original_max_seq_len": 64}},
     {"qk_norm": True}],
    ids=["llama", "tied-yarn", "qwen3"],
)  # fmt: skip
def test_hf_export_loads_back_through_load_model(tmp_path, make_model_dir, overrides):
    """An HF directory (here our own export) loads through the one loading path, same config, same logits."""
    from weakwater.model.config import RopeScaling

    if "rope_scaling" in overrides:
        overrides = {**overrides, "rope_scaling": RopeScaling(**overrides["rope_scaling"])}
    ours = make_model_dir(tmp_path / "m", **overrides)
    hf_dir = export_hf(ours, tmp_path / "hf")
    assert json.loads((hf_dir / "config.json").read_text())["model_type"] == (
        "qwen3" if "qk_norm" in overrides else "llama"
    )
    a, b = load_model(ours).eval(), load_model(hf_dir).eval()
    assert b.config == a.config
    ids = torch.randint(0, a.config.vocab_size, (2, 40))
    with torch.no_grad():
        assert torch.equal(a(ids), b(ids))
    if a.config.tie_embeddings:
        assert b.lm_head.weight is b.embed_tokens.weight
    # bf16 exports come back as fp32 models (what chat/eval expect), equal up to bf16 rounding
    half = load_model(export_hf(ours, tmp_path / "hf16", dtype="bfloat16"))
    assert half.embed_tokens.weight.dtype == torch.float32
    assert torch.equal(half.embed_tokens.weight, a.embed_tokens.weight.to(torch.bfloat16).float())


def test_sharded_hf_directory_loads(tmp_path, make_model_dir):
    from safetensors.torch import save_file

    ours = make_model_dir(tmp_path / "m")
    hf_dir = export_hf(ours, tmp_path / "hf")
    state = load_file(str(hf_dir / "model.safetensors"))
    names = sorted(state)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for file, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(hf_dir / file))
    (hf_dir / "model.safetensors").unlink()
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    (hf_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    ids = torch.randint(0, 100, (1, 16))
    with torch.no_grad():
        assert torch.equal(load_model(ours)(ids), load_model(hf_dir)(ids))
    (hf_dir / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lists model-00002-of-00002.safetensors, which is missing"):
        load_model(hf_dir)


def test_unsupported_hf_directories_are_refused_by_name(tmp_path, make_model_dir):
    hf_dir = export_hf(make_model_dir(tmp_path / "m"), tmp_path / "hf")
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "model_type": "minimind"}))
    with pytest.raises(ValueError, match=r"hf/config.json: cannot load .*model_type 'minimind' is not supported"):
        load_model(hf_dir)
    (hf_dir / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "hidden_size"}))
    with pytest.raises(ValueError, match="missing field 'hidden_size'"):
        load_model(hf_dir)
    (hf_dir / "config.json").write_text(json.dumps(config))
    (hf_dir / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing model.safetensors"):
        load_model(hf_dir)
