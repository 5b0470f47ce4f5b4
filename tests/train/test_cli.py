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


def test_shards_find_their_tokenizer_from_any_working_directory(reference_dir, tmp_path, monkeypatch):
    """`prepare --tokenizer ../tok` run from one folder, training from another: the shards carry their
    tokenizer, so the relative path of the prepare command no longer matters."""
    import shutil

    from weakwater.data.prepare import prepare
    from weakwater.train.build import load_tokenizer as load_run_tokenizer
    from weakwater.train.config import TrainConfig

    shutil.copytree(reference_dir / "minimind_tokenizer", tmp_path / "tok")
    (tmp_path / "work").mkdir()
    corpus = tmp_path / "work" / "corpus.jsonl"
    corpus.write_text('{"text": "hello world"}\n{"text": "你好，世界"}\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path / "work")
    prepare(["corpus.jsonl"], "../tok", "shards", val_frac=0.0, workers=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tok = load_run_tokenizer(TrainConfig(data=str(tmp_path / "work" / "shards")))
    assert tok.encode("你好") == load_tokenizer_at(tmp_path / "tok").encode("你好")
    shutil.rmtree(tmp_path / "tok")  # the copy inside the shards is enough
    assert load_run_tokenizer(TrainConfig(data=str(tmp_path / "work" / "shards"))).vocab_size == 6400


def test_old_meta_with_a_missing_tokenizer_says_where_it_looked(shards, tmp_path, capsys):
    meta = json.loads((shards / "meta.json").read_text())
    old = tmp_path / "old_shards"
    old.mkdir()
    for f in shards.iterdir():
        if f.is_file():
            (old / f.name).write_bytes(f.read_bytes())
    meta["tokenizer"] = {"dir": "../tok_gone"}
    (old / "meta.json").write_text(json.dumps(meta))
    assert main(["pretrain", "--data", str(old), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "../tok_gone" in err and "--tokenizer" in err and str(old / "../tok_gone") in err


def load_tokenizer_at(path):
    from weakwater.tokenizer import load_tokenizer

    return load_tokenizer(path)


@pytest.mark.parametrize("command", ["sft", "distill", "dpo"])
def test_chat_stage_help_describes_jsonl_data_and_plain_defaults(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    data_help = text.split("options:", 1)[1].split("--data DATA", 1)[1].split("--val-data", 1)[0]
    # JSONL first; the only directory it takes is the chat one (prepare --chat), never pretraining shards
    assert "JSONL" in data_help and "weakwater prepare --chat" in data_help
    assert "weakwater prepare " not in data_help.replace("weakwater prepare --chat", "")
    assert "['" not in text and "(default: q_proj,k_proj,v_proj" in text  # lists as they are typed
    assert "(default: None)" not in text and "(default: )" not in text
    assert "with --init the saved model's shape is used" in text


def test_chat_help_has_no_raw_docstring_markup(capsys):
    with pytest.raises(SystemExit):
        main(["chat", "--help"])
    assert "``" not in capsys.readouterr().out


def test_missing_init_and_preset_with_init_are_named(reference_dir, tmp_path, capsys):
    data = str(reference_dir / "data" / "sft.jsonl")
    assert main(["sft", "--data", data, "--init", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert f"--init {tmp_path / 'nope'}: no such directory" in capsys.readouterr().err
    model = tmp_path / "m"
    model.mkdir()
    assert main(["sft", "--data", data, "--init", str(model), "--preset", "26m", "--out", str(tmp_path / "o")]) == 2
    assert "--preset does nothing with --init" in capsys.readouterr().err
    assert main(["sft", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "--data" in capsys.readouterr().err
