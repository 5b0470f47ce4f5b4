"""``weakwater eval tasks`` runs the demo-task scorer; ``--adapter`` evaluates a model with a LoRA adapter."""

from __future__ import annotations

import json

import torch

from weakwater.cli import main
from weakwater.eval.tasks import run_task
from weakwater.model import load_model
from weakwater.model.lora import apply_lora, save_adapter
from weakwater.tokenizer import load_tokenizer


def test_eval_tasks_cli_agrees_with_run_task(tmp_path, make_model_dir, capsys):
    model_dir = make_model_dir(tmp_path / "m")
    rows = [
        {"messages": [{"role": "user", "content": "12 + 35 = ?"}], "answer": "47", "task": "math"},
        {"messages": [{"role": "user", "content": "长江流向哪里？"}], "answer": "东海", "task": "facts"},
    ]
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    args = ["eval", "tasks", "--model", str(model_dir), "--data", str(data), "--max-new-tokens", "8", "--device", "cpu"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    direct = run_task(load_model(model_dir).eval(), load_tokenizer(model_dir), data, max_new_tokens=8)
    assert result["n"] == 2 and set(result["per_task"]) == {"facts", "math"}
    assert [e["generation"] for e in result["examples"]] == [e["generation"] for e in direct["examples"]]


def test_eval_ppl_with_adapter_changes_loss(tmp_path, make_model_dir, capsys):
    model_dir = make_model_dir(tmp_path / "m")
    model = load_model(model_dir)
    apply_lora(model, rank=4, alpha=8)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, 0, 0.2)
    save_adapter(model, tmp_path / "adapter")
    data = tmp_path / "d.jsonl"
    data.write_text(
        json.dumps({"text": "The river flows east to the sea. 河水向东流入大海。"}, ensure_ascii=False) + "\n"
    )
    losses = []
    for extra in ([], ["--adapter", str(tmp_path / "adapter")]):
        assert main(["eval", "ppl", "--model", str(model_dir), "--data", str(data), *extra]) == 0
        losses.append(json.loads(capsys.readouterr().out)["loss"])
    assert abs(losses[0] - losses[1]) > 1e-3
