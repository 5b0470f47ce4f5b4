"""Impossible runs fail in the constructor, before any step, with a message saying what to change."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from weakwater.train.config import ConfigError, TrainConfig
from weakwater.train.stages.pretrain import PretrainStage
from weakwater.train.trainer import Trainer

TINY_MODEL = {"vocab_size": 64, "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64}


def trainer(shards: Path, out: Path, tokenizer=None, **overrides) -> Trainer:
    fields = dict(data=str(shards), out=str(out), batch_size=8, seq_len=32, max_steps=2, save_every=1, plot=False)
    fields["model"] = {**TINY_MODEL, **overrides.pop("model", {})}
    cfg = TrainConfig(**{**fields, **overrides})
    return Trainer(cfg, PretrainStage(cfg), tokenizer=tokenizer)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"dim": 30}, "dim (30) must be divisible by n_heads (4)"),
        ({"n_kv_heads": 3}, "n_kv_heads (3) must divide n_heads (4)"),
        ({"hidden": 3}, "valid keys are the ModelConfig fields"),
        ({"vocab_size": 32}, "tokenized with a 64-token vocabulary but the model has vocab_size 32"),
    ],
)
def test_impossible_model_shapes(shards, tmp_path, model, expected):
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        trainer(shards, tmp_path / "run", model=model)


def test_tokenizer_larger_than_model_vocab(shards, tmp_path):
    tok = SimpleNamespace(vocab_size=100, dir=None)
    with pytest.raises(ConfigError, match=r"tokenizer has 100 tokens but model vocab_size is 64: drop the vocab_size"):
        trainer(shards, tmp_path / "run", tokenizer=tok)


def test_seq_len_beyond_context_names_the_fixes(shards, tmp_path):
    with pytest.raises(ConfigError, match=r"--seq-len 128 exceeds the model's max_seq_len 64.*rope_scaling"):
        trainer(shards, tmp_path / "run", seq_len=128)


def test_scalar_settings_are_all_reported_at_once():
    cfg = TrainConfig(data="d", batch_size=0, grad_accum=0, dtype="fp8", tracker="mlflow", lr=-1, device="tpu")
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    message = str(err.value)
    for part in (
        "--batch-size must be >= 1",
        "--grad-accum must be >= 1",
        "--dtype must be one of",
        "--tracker",
        "--lr",
        "--device",
    ):
        assert part in message


def test_jsonl_data_points_to_prepare():
    with pytest.raises(ConfigError, match=r"weakwater prepare --data corpus.jsonl"):
        TrainConfig(data="corpus.jsonl").validate()


def test_fsdp_needs_torchrun(shards, tmp_path):
    with pytest.raises(ConfigError, match="torchrun"):
        trainer(shards, tmp_path / "run", fsdp=True, optimizer="adamw")


def test_new_run_refuses_existing_checkpoints_and_resume_checks_shape(shards, tmp_path):
    out = tmp_path / "run"
    trainer(shards, out).fit()
    with pytest.raises(ConfigError, match="already holds checkpoints of a run: pass --resume"):
        trainer(shards, out)
    with pytest.raises(ConfigError, match=r"different model shape \(dim: checkpoint 32 vs now 64;"):
        trainer(shards, out, resume=True, model={"dim": 64})


def test_init_starts_from_a_saved_model_with_new_dropout(shards, tmp_path):
    first = trainer(shards, tmp_path / "a").fit()
    second = trainer(shards, tmp_path / "b", init=str(first), model={"dropout": 0.2})
    assert second.model.config.dropout == 0.2 and second.model.config.dim == 32
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(first / "model.safetensors"))
    assert torch.equal(second.model.embed_tokens.weight.detach().cpu(), saved["embed_tokens.weight"])
    with pytest.raises(ConfigError, match=r"model overrides dim=64 change the shape of the --init model"):
        trainer(shards, tmp_path / "c", init=str(first), model={"dim": 64})
