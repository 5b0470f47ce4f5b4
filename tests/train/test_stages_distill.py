"""White-box (logit) distillation: the loss by hand, zero KL for a teacher equal to the student, the tokenizer
check, and a run with --teacher."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from weakwater.model.loglik import IGNORE_INDEX
from weakwater.tokenizer import load_tokenizer
from weakwater.train.config import ConfigError
from weakwater.train.losses import distillation_loss
from weakwater.train.stages.distill import DistillConfig, DistillStage
from weakwater.train.trainer import Trainer


def test_distillation_loss_by_hand():
    # One supervised token with V = 2: student uniform, teacher logits (ln 3, 0) -> p_t = (3/4, 1/4).
    student = torch.zeros(1, 2, 2)
    teacher = torch.tensor([[[math.log(3), 0.0], [5.0, 0.0]]])
    targets = torch.tensor([[0, IGNORE_INDEX]])  # the second position must not count
    weights = torch.tensor([[1.0, 0.0]])  # the collator's weights: 0 where nothing is scored
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    ce = math.log(2)
    total, count = distillation_loss(student, teacher, targets, weights, temperature=1.0, alpha=0.5)
    assert total.item() == pytest.approx(0.5 * kl + 0.5 * ce, abs=1e-6) and count.item() == 1
    # tau = 2: p_t = softmax(ln3 / 2, 0) = (sqrt3, 1) / (sqrt3 + 1); the KL is scaled by tau^2 = 4
    pt = torch.tensor([math.sqrt(3), 1.0]) / (math.sqrt(3) + 1)
    kl2 = float((pt * (pt / 0.5).log()).sum())
    total, _ = distillation_loss(student, teacher, targets, weights * 3, temperature=2.0, alpha=1.0)
    assert total.item() == pytest.approx(3 * 4 * kl2, abs=1e-6)  # token weight 3


def test_kl_term_is_zero_when_teacher_is_student():
    logits = torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    targets[0, :2] = IGNORE_INDEX
    weights = (targets != IGNORE_INDEX).float()
    total, count = distillation_loss(logits, logits.clone(), targets, weights, temperature=2.0, alpha=1.0)
    assert total.abs().item() < 1e-5 and count.item() == 8


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
