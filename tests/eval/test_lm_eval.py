"""lm-evaluation-harness runs offline on our HF export with a local task and scores exactly what we score."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from weakwater.eval.choice import continuation_logprobs
from weakwater.export.hf import export_hf
from weakwater.model import load_model
from weakwater.tokenizer import load_tokenizer

ROWS = [
    {"question": "长江流向哪里？", "choices": ["东海", "西湖", "北冰洋", "南海"], "label": 0},
    {"question": "12 + 35 = ?", "choices": ["46", "47", "48", "49"], "label": 1},
    {"question": "The sun rises in the?", "choices": ["east", "west", "north", "south"], "label": 0},
]

TASK_YAML = """task: weakwater_demo_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}\\n答案："
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.mark.slow
def test_lm_eval_harness_on_hf_export(tmp_path, make_model_dir):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness not installed (pip install -e '.[dev]')")
    model_dir = make_model_dir(tmp_path / "m")
    hf_dir = export_hf(model_dir, tmp_path / "hf")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "data.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS))
    (tasks / "weakwater_demo_choice.yaml").write_text(TASK_YAML.format(data=tasks / "data.jsonl"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={hf_dir},dtype=float32",
           "--tasks", "weakwater_demo_choice", "--include_path", str(tasks), "--device", "cpu", "--batch_size", "4",
           "--output_path", str(tmp_path / "out"), "--log_samples"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = [json.loads(line) for f in (tmp_path / "out").rglob("samples_*.jsonl") for line in f.open()]
    assert len(samples) == len(ROWS)

    model, tok = load_model(model_dir).eval(), load_tokenizer(model_dir)
    correct = 0
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        row = ROWS[s["doc_id"]]
        context = tok.encode(row["question"] + "\n答案：")
        ours = continuation_logprobs(model, context, [tok.encode(" " + c) for c in row["choices"]], max_len=128)
        theirs = [float(r[0][0]) for r in s["resps"]]
        assert max(abs(a - b) for (a, _), b in zip(ours, theirs)) < 1e-3
        correct += int(torch.tensor([a for a, _ in ours]).argmax()) == row["label"]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert results["results"]["weakwater_demo_choice"]["acc,none"] == pytest.approx(correct / len(ROWS))
