"""``weakwater eval suite``: every task on two models, one report with a column per model."""

from __future__ import annotations

import json

import pytest

from weakwater.cli import main
from weakwater.eval.suite import SuiteConfig, model_name, run_suite


def test_model_names():
    taken: set[str] = set()
    assert model_name("runs/demo/sft/final", taken) == "sft"
    assert model_name("exports/sft", taken) == "sft-2"
    assert model_name("models/minimind", taken) == "minimind"


@pytest.mark.slow
def test_suite_on_two_models(tmp_path, make_model_dir, reference_dir):
    a, b = make_model_dir(tmp_path / "a" / "final", seed=0), make_model_dir(tmp_path / "b", seed=1)
    math = tmp_path / "math.jsonl"
    math.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n" + '{"question": "broken\n', encoding="utf-8")
    text = tmp_path / "text.jsonl"
    text.write_text(json.dumps({"text": "The river flows east. 河水向东流。"}, ensure_ascii=False) + "\n")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"messages": [{"role": "user", "content": "1+1?"}], "answer": "2"}) + "\n")
    cfg = SuiteConfig(
        tasks=("math", "repetition", "needle", "bpb", "choice", "tasks"), math_data=[str(math), "builtin"],
        bpb_data=str(text), choice_data=str(reference_dir / "data/eval/cmmlu_dev_elementary_mathematics.csv"),
        tasks_data=[str(tasks)], limit=2, samples=2, max_new_tokens=6, repetition_tokens=6, needle_lengths=[40, 160],
        needle_trials=1, progress=False,
    )  # fmt: skip
    report_md = run_suite([str(a), str(b)], cfg, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert list(report["models"]) == ["a", "b"]
    results = report["models"]["a"]["results"]
    assert set(results) == {"math:math", "math:builtin", "repetition", "needle", "bpb", "choice", "tasks:tasks"}
    assert all(r["time_s"] >= 0 for r in results.values())
    assert results["math:math"]["malformed"][0].startswith(f"{math}:2: invalid JSON")
    assert results["math:builtin"]["n"] == 2 and results["choice"]["questions"] == 2
    md = report_md.read_text()
    assert "| metric | a | b |" in md and "needle: beyond context" in md and "Malformed rows skipped" in md
    for png in ("needle.png", "summary.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"


def test_suite_cli(tmp_path, make_model_dir, capsys):
    model = make_model_dir(tmp_path / "m")
    args = ["eval", "suite", "--model", str(model), "--name", "tiny", "--out", str(tmp_path / "o"), "--limit", "1",
            "--samples", "0", "--max-new-tokens", "4", "--needle-lengths", "40", "--tasks", "math,needle"]  # fmt: skip
    assert main(args) == 0
    assert "| metric | tiny |" in capsys.readouterr().out
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert set(report["models"]["tiny"]["results"]) == {"math:builtin", "needle"}


@pytest.mark.slow
def test_suite_on_an_hf_export_scores_like_the_model(tmp_path, make_model_dir, capsys):
    """`eval suite --model HF_DIR` loads the export through the one loading path: same numbers as the original."""
    from weakwater.export.hf import export_hf

    model = make_model_dir(tmp_path / "m")
    hf_dir = export_hf(model, tmp_path / "hf")
    args = ["eval", "suite", "--model", str(model), "--model", str(hf_dir), "--out", str(tmp_path / "o"),
            "--limit", "2", "--samples", "0", "--max-new-tokens", "4", "--needle-lengths", "40",
            "--tasks", "math,needle"]  # fmt: skip
    assert main(args) == 0
    assert "| metric | m | hf |" in capsys.readouterr().out
    models = json.loads((tmp_path / "o" / "report.json").read_text())["models"]
    for result in (*models["m"]["results"].values(), *models["hf"]["results"].values()):
        result.pop("time_s")
    assert models["hf"]["results"] == models["m"]["results"]
    assert models["hf"]["params"] == models["m"]["params"]
