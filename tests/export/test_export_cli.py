"""The export commands write loadable outputs and report bad input as one clear error line."""

from __future__ import annotations

import json

from weakwater.cli import main


def test_export_cli_hf_and_gguf(tmp_path, make_model_dir, capsys):
    model_dir = make_model_dir(tmp_path / "m")
    assert main(["export", "hf", "--model", str(model_dir), "--out", str(tmp_path / "hf"), "--dtype", "float16"]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "float16"
    assert main(["export", "gguf", "--model", str(model_dir), "--out", str(tmp_path / "m.gguf"), "--type", "q8_0"]) == 0
    assert (tmp_path / "m.gguf").stat().st_size > 0
    assert "q8_0" in capsys.readouterr().out


def test_export_cli_missing_model(tmp_path, capsys):
    assert main(["export", "gguf", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x.gguf")]) == 2
    assert "weakwater export: error:" in capsys.readouterr().err
