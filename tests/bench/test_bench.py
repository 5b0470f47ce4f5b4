"""The bench commands run end to end at tiny sizes and write well-formed JSON (no timing assertions)."""

from __future__ import annotations

import json

import pytest

from weakwater.bench.common import format_table, peak_tflops
from weakwater.bench.data import write_corpus
from weakwater.cli import main


def test_bench_train_writes_ours_and_hf_results(tmp_path, capsys):
    out = tmp_path / "train.json"
    args = ["bench", "train", "--preset", "tiny", "--batch", "2", "--seq", "16", "--steps", "2", "--warmup", "1"]
    assert main([*args, "--device", "cpu", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {r["variant"] for r in result["results"]} == {"ours-eager", "hf-eager"}
    for row in result["results"]:
        assert row["tokens_per_s"] > 0 and len(row["step_s_all"]) == 2
        assert row["mfu"] is None  # no bf16 peak is known for a CPU
    assert result["ratios"]["ours_eager_vs_hf_eager"] > 0
    assert result["flops_per_token"] > 0 and result["peak_rss_mb"] > 0
    assert result["dtype"] == "fp32" and result["environment"]["cpu"]
    assert "ours-eager" in capsys.readouterr().out


def test_bench_train_rejects_bad_sizes(capsys):
    assert main(["bench", "train", "--preset", "tiny", "--steps", "0", "--device", "cpu"]) == 2
    assert "--steps" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_prepare_and_tokenizer_on_a_small_corpus(tmp_path):
    common = ["--gb", "0.002", "--vocab-size", "400", "--tmp-dir", str(tmp_path)]
    assert main(["bench", "tokenizer", *common, "--cores", "1", "--json", str(tmp_path / "tok.json")]) == 0
    tok = json.loads((tmp_path / "tok.json").read_text())["tokenizer"]
    assert tok["vocab_size"] == 400 and tok["cores"] == 1
    assert tok["peak_rss_tree_mb"] > 0 and tok["wall_s"] > 0 and tok["trained_on_mb"] > 0

    assert main(["bench", "prepare", *common, "--workers", "2", "--json", str(tmp_path / "prep.json")]) == 0
    result = json.loads((tmp_path / "prep.json").read_text())
    prep = result["prepare"]
    assert prep["workers"] == 2 and prep["tokens"] > 0 and prep["tokens_per_s"] > 0
    assert prep["docs_kept"] == result["corpus"]["docs"]  # every generated line is distinct
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("weakwater-bench-")] == []  # cleaned up


def test_corpus_lines_are_distinct_json_with_both_scripts(tmp_path):
    path = tmp_path / "c.jsonl"
    info = write_corpus(path, 200_000, seed=1)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == info["docs"] == len(set(lines))
    text = "".join(json.loads(line)["text"] for line in lines)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text) and any(ch.isascii() and ch.isalpha() for ch in text)


@pytest.mark.parametrize(
    ("name", "peak"), [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("Intel Xeon", None)]
)
def test_peak_lookup(name, peak):
    assert peak_tflops(name) == peak


def test_table_aligns_columns():
    text = format_table([{"a": "x", "b": 1234.5}, {"a": "longer", "b": None}], [("a", "A"), ("b", "B")])
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1 and "1,234" in text and lines[-1].endswith("-")


@pytest.mark.slow
def test_bench_all_writes_one_json(tmp_path):
    out = tmp_path / "all.json"
    args = ["--preset", "tiny", "--batch", "2", "--seq", "16", "--steps", "1", "--gb", "0.002", "--cores", "1"]
    assert main(["bench", "all", *args, "--device", "cpu", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["train"]["ratios"]["ours_eager_vs_hf_eager"] > 0
    assert result["data"]["tokenizer"]["wall_s"] > 0 and result["data"]["prepare"]["tokens"] > 0
    assert result["decode"]["results"][0]["ours_tok_s"] > 0
