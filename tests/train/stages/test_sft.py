"""SFT, long-context SFT and distillation as stages of the one trainer."""

from __future__ import annotations

import json
import math

import pytest
import torch

from weakwater.model.io import load_model, read_model_config
from weakwater.tokenizer import load_tokenizer
from weakwater.train.config import ConfigError
from weakwater.train.stages.distill import DistillConfig, DistillStage
from weakwater.train.stages.sft import SFTConfig, SFTStage
from weakwater.train.trainer import Trainer

# Tiny windows cut most real answers on purpose (these tests are about the stages, not the data).
RUN = dict(
    max_steps=2, batch_size=2, eval_every=0, eval_batches=1, save_every=0, log_every=1, device="cpu",
    allow_truncation=True,
)  # fmt: skip


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("tokenizer", ["ours", "minimind"])
@pytest.mark.parametrize("name", ["sft", "r1"])
def test_few_steps_on_real_samples(tmp_path, reference_dir, bpe_tokenizer_dir, tokenizer, name):
    tok_dir = bpe_tokenizer_dir if tokenizer == "ours" else reference_dir / "minimind_tokenizer"
    tok = load_tokenizer(tok_dir)
    data = reference_dir / "data" / f"{name}.jsonl"
    model = {"dim": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 64}
    cls, stage_cls = (SFTConfig, SFTStage) if name == "sft" else (DistillConfig, DistillStage)
    cfg = cls(
        data=str(data),
        val_data=str(data),
        out=str(tmp_path / name),
        tokenizer=str(tok_dir),
        seq_len=64,
        model=model,
        **RUN,
    )
    final = Trainer(cfg, stage_cls(cfg, tok), tokenizer=tok).fit()
    assert load_model(final).config.vocab_size == tok.vocab_size
    rows = _metrics(tmp_path / name)
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
    summary = [r for r in rows if "train_truncated" in r][-1]
    assert summary["train_skipped"] == 0 and summary["train_truncated"] > 0  # 64 tokens cut some samples, reported


def test_distill_upweights_only_assistant_tags(bpe_tokenizer_dir):
    """A tag written in the prompt gets weight 0; the same tag in the reply gets --tag-weight; other reply tokens 1."""
    tok = load_tokenizer(bpe_tokenizer_dir)
    cfg = DistillConfig(data="unused.jsonl", tag_weight=10.0)
    stage = DistillStage(cfg, tok)
    from weakwater.data.sft import tokenize_conversation

    conv = [
        {"role": "user", "content": "Answer with <think> and <answer> tags: 1 + 1?"},
        {"role": "assistant", "content": "<think>\n1 + 1 = 2\n</think>\n<answer>\n2\n</answer>"},
    ]
    ids, mask = tokenize_conversation(tok, conv)
    batch = stage.collate([{"ids": torch.tensor(ids), "mask": torch.tensor(mask)}])
    tags = {tok.token_to_id(t) for t in ("<think>", "</think>", "<answer>", "</answer>")}
    weights, targets = batch["weights"][0].tolist(), ids[1:]
    for pos, (tok_id, sup, w) in enumerate(zip(targets, mask[1:], weights)):
        expected = 0.0 if not sup else (10.0 if tok_id in tags else 1.0)
        assert w == expected, f"target {pos} ({tok.decode([tok_id])!r}): weight {w}, expected {expected}"
    assert sum(1 for t, s in zip(targets, mask[1:]) if t in tags and not s) == 2  # prompt tags present, weight 0
    assert weights.count(10.0) == 4


@pytest.mark.parametrize("kind", ["linear", "yarn"])
def test_long_context_sft_stores_rope_scaling(tmp_path, make_model_dir, bpe_tokenizer_dir, kind):
    """A model pretrained at 32 positions fine-tunes at 64: scaling stored, positions past 32 trained and finite."""
    init = make_model_dir(tmp_path / "init", max_seq_len=32, init_std=0.02)
    long_reply = "The river flows east to the sea. " * 6
    conv = {"conversations": [{"role": "user", "content": "Tell me about the river."},
                              {"role": "assistant", "content": long_reply}]}  # fmt: skip
    data = tmp_path / "long.jsonl"
    data.write_text((json.dumps(conv) + "\n") * 4)
    tok = load_tokenizer(bpe_tokenizer_dir)
    cfg = SFTConfig(data=str(data), out=str(tmp_path / "long"), init=str(init), max_seq_len=64, rope_scaling=kind,
                    **RUN)  # fmt: skip
    stage = SFTStage(cfg, tok)
    final = Trainer(cfg, stage, tokenizer=tok).fit()
    config, _ = read_model_config(final)
    assert config.max_seq_len == 64
    assert config.rope_scaling.kind == kind and config.rope_scaling.factor == 2.0
    assert config.rope_scaling.original_max_seq_len == 32
    assert len(stage.train_set[0]["ids"]) > 33  # the sample really uses positions beyond the pretrained 32
    model = load_model(final)
    base = load_model(init)
    assert not torch.allclose(model.inv_freq, base.inv_freq)  # stretched positions, not the pretrained ones
    logits = model(stage.train_set[0]["ids"][None, :64])
    assert torch.isfinite(logits).all()


def test_long_context_without_scaling_is_refused(tmp_path, make_model_dir):
    init = make_model_dir(tmp_path / "init", max_seq_len=32)
    cfg = SFTConfig(data="x.jsonl", out=str(tmp_path / "o"), init=str(init), max_seq_len=64)
    cfg.validate()  # validation reads no files and changes no field ...
    assert cfg.model == {} and cfg.seq_len == 256
    with pytest.raises(ConfigError, match="--rope-scaling"):
        cfg.model_overrides()  # ... the explicit resolution against the --init model does


def test_lora_sft_saves_adapter_and_merged_model(tmp_path, make_model_dir, bpe_tokenizer_dir, reference_dir):
    init = make_model_dir(tmp_path / "init")
    tok = load_tokenizer(bpe_tokenizer_dir)
    cfg = SFTConfig(data=str(reference_dir / "data" / "sft.jsonl"), out=str(tmp_path / "lora"), init=str(init),
                    seq_len=48, lora_rank=4, lora_alpha=8.0, lora_targets=["q_proj", "v_proj"], **RUN)  # fmt: skip
    trainer = Trainer(cfg, SFTStage(cfg, tok), tokenizer=tok)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    assert 0 < trainable < 0.2 * sum(p.numel() for p in trainer.model.parameters())
    final = trainer.fit()
    adapter = json.loads((tmp_path / "lora" / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    assert not any("lora" in k for k in load_model(final).state_dict())


def test_cli_sft_and_strict_error(tmp_path, make_model_dir, capsys):
    from weakwater.cli import main

    init = make_model_dir(tmp_path / "init")
    good = {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps(good) + "\n" + json.dumps({"conversations": [{"role": "user"}]}) + "\n")
    args = ["sft", "--data", str(data), "--init", str(init), "--out", str(tmp_path / "run"), "--max-steps", "1",
            "--batch-size", "1", "--seq-len", "32", "--device", "cpu", "--eval-every", "0",
            "--save-every", "0"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "sft train data: 1 conversations, skipped 1 records:\n  no_assistant_turn x1, first: " in err
    assert f"{data}:2: field conversations: no non-empty assistant turn" in err
    assert (tmp_path / "run" / "final" / "config.json").exists()
    assert main([*args[:-6], "--out", str(tmp_path / "strict"), "--strict", "--max-steps", "1"]) == 2
    strict_err = capsys.readouterr().err
    assert strict_err.startswith("weakwater sft: error:")
    assert "chat.jsonl:2: field conversations: no non-empty assistant turn" in strict_err
