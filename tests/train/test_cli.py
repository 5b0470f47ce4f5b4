"""``weakwater pretrain`` end to end: flags, --config with a [model] table, user errors exit 2."""

from __future__ import annotations

import json

import pytest

from weakwater.cli import main
from weakwater.model.io import load_model


def test_pretrain_help_lists_every_knob(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data", "--out", "--resume", "--grad-accum", "--tracker", "--model-arg", "--config", "--fsdp"):
        assert flag in text


def test_jsonl_data_is_a_user_error(tmp_path, capsys):
    assert main(["pretrain", "--data", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("weakwater pretrain: error:") and "weakwater prepare" in err


def test_bad_model_arg_is_a_user_error(shards, tmp_path, capsys):
    assert main(["pretrain", "--data", str(shards), "--out", str(tmp_path / "o"), "--model-arg", "dim"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_pretrain_command_trains_and_saves_a_usable_model(reference_dir, tmp_path):
    from weakwater.data.prepare import prepare
    from weakwater.tokenizer import load_tokenizer

    tokenizer_dir = reference_dir / "minimind_tokenizer"
    lines = (reference_dir / "data" / "pretrain.jsonl").read_text(encoding="utf-8").splitlines()[:300]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = tmp_path / "tokens"
    prepare([corpus], tokenizer_dir, data, val_frac=0.1, workers=1)
    config = tmp_path / "run.toml"
    config.write_text(
        f'data = "{data}"\nbatch_size = 4\nseq_len = 64\nmax_steps = 4\nwarmup_steps = 1\nlog_every = 2\n'
        f"eval_every = 2\neval_batches = 2\nsave_every = 2\nplot = false\n\n[model]\ndim = 32\nn_layers = 1\n"
        f"n_heads = 4\nn_kv_heads = 2\n"
    )
    out = tmp_path / "run"
    # --tokenizer omitted: the one recorded in the data's meta.json is used
    code = main(["pretrain", "--config", str(config), "--out", str(out), "--model-arg", "n_layers=2"])
    assert code == 0
    model = load_model(out / "final")
    assert (model.config.dim, model.config.n_layers) == (32, 2)
    assert model.config.vocab_size == load_tokenizer(out / "final").vocab_size
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["model"] == {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2}
    assert any("val_loss" in json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())
