"""Run resolution (train/build.py): the CLI and a Python ``Trainer`` pick the same tokenizer by one rule."""

from __future__ import annotations

import json

import pytest

from weakwater.train import build
from weakwater.train.config import ConfigError, TrainConfig

from .conftest import write_shards


@pytest.fixture
def named_shards(tmp_path, bpe_tokenizer_dir):
    """Shards whose meta.json names the tokenizer they were prepared with, as `weakwater prepare` writes it."""
    out = write_shards(tmp_path / "shards", train_tokens=2000, val_tokens=200)
    meta = json.loads((out / "meta.json").read_text())
    meta["tokenizer"] = {"dir": str(bpe_tokenizer_dir)}
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def test_tokenizer_flag_then_init_then_the_data(tmp_path, named_shards, make_model_dir, bpe_tokenizer_dir):
    init = make_model_dir(tmp_path / "init")
    other = tmp_path / "other_tok"
    other.mkdir()
    cfg = TrainConfig(data=str(named_shards), out=str(tmp_path / "run"))
    assert build.tokenizer_source(cfg) == str(bpe_tokenizer_dir)  # the one the data was prepared with
    cfg.init = str(init)
    assert build.tokenizer_source(cfg) == str(init)  # the saved model's own copy comes first
    cfg.tokenizer = str(other)
    assert build.tokenizer_source(cfg) == str(other)  # and the flag before both


def test_cli_and_python_runs_load_the_same_tokenizer(tmp_path, named_shards, bpe_tokenizer_dir):
    cfg = TrainConfig(data=str(named_shards), out=str(tmp_path / "run"))
    required = build.load_tokenizer(cfg, required=True)  # what `weakwater pretrain` loads
    plain = build.load_tokenizer(cfg)  # what Trainer(cfg, stage) loads
    assert required.dir == plain.dir == bpe_tokenizer_dir


def test_no_tokenizer_anywhere(tmp_path, shards):
    cfg = TrainConfig(data=str(shards), out=str(tmp_path / "run"))
    assert build.load_tokenizer(cfg) is None  # a model-only Python run
    with pytest.raises(ConfigError, match="no tokenizer: pass --tokenizer"):
        build.load_tokenizer(cfg, required=True)


def test_a_vanished_tokenizer_is_named(tmp_path, named_shards):
    meta = json.loads((named_shards / "meta.json").read_text())
    meta["tokenizer"]["dir"] = str(tmp_path / "gone")
    (named_shards / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"names tokenizer .*gone.*, which is not at .*--tokenizer"):
        build.tokenizer_source(TrainConfig(data=str(named_shards), out=str(tmp_path / "run")))
