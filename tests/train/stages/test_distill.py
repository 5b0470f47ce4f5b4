"""White-box (logit) distillation stage: the tokenizer check and a run with --teacher (the loss: test_losses.py)."""

from __future__ import annotations

import json
import shutil

import pytest

from weakwater.tokenizer import load_tokenizer
from weakwater.train.config import ConfigError
from weakwater.train.stages.distill import DistillConfig, DistillStage
from weakwater.train.trainer import Trainer


def chats(path, n=24):
    rows = []
    for i in range(n):
        a, b = i % 7, i % 5
        reply = f"<think>\n{a} + {b} = {a + b}\n</think>\n<answer>\n{a + b}\n</answer>"
        rows.append(
            {"conversations": [{"role": "user", "content": f"{a} + {b}?"}, {"role": "assistant", "content": reply}]}
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_distill_with_teacher_runs_and_checks_the_tokenizer(tmp_path, make_model_dir, bpe_tokenizer_dir):
    student = make_model_dir(tmp_path / "student", seed=0, init_std=0.02)
    teacher = make_model_dir(tmp_path / "teacher", seed=1, init_std=0.02, dim=96)
    data = chats(tmp_path / "r1.jsonl")
    tok = load_tokenizer(bpe_tokenizer_dir)
    common = dict(data=str(data), init=str(student), max_steps=3, batch_size=4, seq_len=64, lr=1e-3,
                  warmup_steps=1, log_every=1, eval_every=0, save_every=0, plot=False, device="cpu")  # fmt: skip
    cfg = DistillConfig(out=str(tmp_path / "kd"), teacher=str(teacher), kd_alpha=0.7, kd_temperature=2.0, **common)
    cfg.validate()
    stage = DistillStage(cfg, tok)
    Trainer(cfg, stage, tokenizer=tok).fit()
    assert stage.teacher is not None and not any(p.requires_grad for p in stage.teacher.parameters())
    assert (tmp_path / "kd" / "final" / "model.safetensors").is_file()

    other = tmp_path / "other_tok"
    shutil.copytree(bpe_tokenizer_dir, other)
    (other / "tokenizer.json").write_text((other / "tokenizer.json").read_text().replace('"<think>"', '"<thinK>"'))
    bad_teacher = tmp_path / "teacher2"
    shutil.copytree(teacher, bad_teacher)
    shutil.copy(other / "tokenizer.json", bad_teacher / "tokenizer.json")
    cfg = DistillConfig(out=str(tmp_path / "kd2"), teacher=str(bad_teacher), **common)
    with pytest.raises(ConfigError, match="different tokenizer than the student"):
        DistillStage(cfg, tok)
