"""The RL stages on tiny CPU runs: metrics and plot, a custom reward steering behaviour, exact resume in the
middle of a --ppo-epochs cycle, references (LoRA: adapters off; beta 0: none), online DPO."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from weakwater.tokenizer import load_tokenizer
from weakwater.train.stages.online_dpo import OnlineDPOConfig, OnlineDPOStage
from weakwater.train.stages.rl import RLConfig, RLStage
from weakwater.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).parents[1] / "rl_run.py"

# A user reward in TRL's convention: the share of reply tokens among ids 100-149 (about 7% for the random
# initial model), so the groups' rewards differ and a policy that learns shows it.
CUSTOM_REWARD = textwrap.dedent(
    """
    def band(prompts, completions, completion_ids, **kwargs):
        return [sum(100 <= t < 150 for t in ids) / max(1, len(ids)) for ids in completion_ids]
    """
)


def prompts_file(path: Path, n: int = 16) -> Path:
    rows = [{"prompt": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rl_config(tmp_path: Path, model_dir: Path, name: str, cls=RLConfig, **overrides) -> RLConfig:
    fields = dict(
        data=str(prompts_file(tmp_path / "prompts.jsonl")),
        init=str(model_dir),
        out=str(tmp_path / name),
        device="cpu",
        max_steps=4,
        batch_size=2,
        group_size=4,
        max_new_tokens=8,
        max_prompt_len=32,
        lr=1e-3,
        log_every=1,
        eval_every=0,
        save_every=0,
        plot=False,
        reward=["math", "format=0.5", "length=0.1", "repetition=0.1"],
        length_limit=4,
        repetition_n=1,
        seed=3,
    )
    fields.update(overrides)
    cfg = cls(**fields)
    cfg.validate()
    return cfg


def fit(cfg, tok, stage_cls=RLStage, interrupt=None) -> tuple[Trainer, RLStage]:
    """Train; ``interrupt=(interrupt_after, n)`` stops after n steps as Ctrl-C would."""
    stage = stage_cls(cfg, tok)
    trainer = Trainer(cfg, stage, tokenizer=tok)
    if interrupt is not None:
        interrupt[0](trainer, interrupt[1])
    trainer.fit()
    return trainer, stage


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def model_dir(tmp_path, make_model_dir):
    return make_model_dir(tmp_path / "init", init_std=0.02)


@pytest.fixture
def tok(bpe_tokenizer_dir):
    return load_tokenizer(bpe_tokenizer_dir)


def test_rl_run_logs_every_metric_and_the_reward_curve(tmp_path, model_dir, tok):
    (tmp_path / "band_reward.py").write_text(CUSTOM_REWARD)
    rewards = ["math", "format=0.5", "length=0.1", "repetition=0.1", f"{tmp_path / 'band_reward.py'}:band"]
    cfg = rl_config(tmp_path, model_dir, "run", beta=0.1, ppo_epochs=2, val_data=str(tmp_path / "prompts.jsonl"),
                    eval_limit=4, drop_equal_groups=False, reward=rewards)  # fmt: skip
    trainer, stage = fit(cfg, tok)
    assert trainer.step == 4 and stage.ref_model is not None and stage.lora_model is None
    steps = [r for r in records(tmp_path / "run") if "loss" in r]
    keys = {"reward", "reward_math", "reward_format", "reward_length", "reward_repetition", "accuracy",
            "completion_len", "kl", "clip_low", "clip_high", "entropy", "zero_adv_groups", "finished"}  # fmt: skip
    assert len(steps) == 4 and all(keys <= r.keys() for r in steps)
    assert steps[0]["kl"] == 0.0  # the policy is the reference before its first update
    assert steps[1]["kl"] > 0 and steps[2]["kl"] > 0
    evals = [r for r in records(tmp_path / "run") if "heldout_accuracy" in r]
    assert evals and 0 <= evals[-1]["heldout_format"] <= 1
    assert (tmp_path / "run" / "reward.png").stat().st_size > 1000


def test_beta_zero_holds_no_reference_and_lora_uses_the_base(tmp_path, model_dir, tok):
    _, stage = fit(rl_config(tmp_path, model_dir, "nobeta", max_steps=1), tok)
    assert stage.ref_model is None and stage.lora_model is None
    (tmp_path / "band_reward.py").write_text(CUSTOM_REWARD)
    band = [f"{tmp_path / 'band_reward.py'}:band"]
    trainer, stage = fit(rl_config(tmp_path, model_dir, "lora", max_steps=2, beta=0.1, lora_rank=4, reward=band), tok)
    assert stage.ref_model is None and stage.lora_model is trainer.model
    steps = [r for r in records(tmp_path / "lora") if "loss" in r]
    assert steps[0]["kl"] == 0.0 and steps[1]["kl"] > 0  # adapters start at zero: policy == base


def test_custom_reward_moves_behaviour_its_way(tmp_path, model_dir, tok):
    (tmp_path / "band_reward.py").write_text(CUSTOM_REWARD)
    cfg = rl_config(tmp_path, model_dir, "digits", max_steps=30, lr=1e-2, warmup_steps=0, batch_size=4,
                    reward=[f"{tmp_path / 'band_reward.py'}:band"], max_new_tokens=6)  # fmt: skip
    fit(cfg, tok)
    rewards = [r["reward"] for r in records(tmp_path / "digits") if "loss" in r]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.1, rewards


def test_resume_in_the_middle_of_a_ppo_cycle_is_bitwise_equal(tmp_path, model_dir, tok, interrupt_after):
    (tmp_path / "band_reward.py").write_text(CUSTOM_REWARD)
    kw = dict(max_steps=6, ppo_epochs=2, beta=0.05, save_every=0, reward=[f"{tmp_path / 'band_reward.py'}:band"])
    fit(rl_config(tmp_path, model_dir, "full", **kw), tok)
    trainer, _ = fit(rl_config(tmp_path, model_dir, "part", **kw), tok, interrupt=(interrupt_after, 3))
    assert trainer.interrupted and trainer.step == 3  # step 3 reuses the rollout of step 2
    trainer, _ = fit(rl_config(tmp_path, model_dir, "part", resume=True, **kw), tok)
    assert trainer.step == 6
    a = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_online_dpo_trains_on_best_and_worst_sampled_replies(tmp_path, model_dir, tok):
    (tmp_path / "band_reward.py").write_text(CUSTOM_REWARD)
    cfg = OnlineDPOConfig(
        data=str(prompts_file(tmp_path / "prompts.jsonl")), init=str(model_dir), out=str(tmp_path / "odpo"),
        device="cpu", max_steps=3, batch_size=2, group_size=4, max_new_tokens=6, max_prompt_len=32, lr=1e-3,
        log_every=1, eval_every=0, save_every=0, plot=False, reward=[f"{tmp_path / 'band_reward.py'}:band"],
    )  # fmt: skip
    cfg.validate()
    trainer, stage = fit(cfg, tok, OnlineDPOStage)
    assert stage.ref_model is not None
    steps = [r for r in records(tmp_path / "odpo") if "loss" in r]
    assert len(steps) == 3 and all({"reward_margin", "pair_share", "reward"} <= r.keys() for r in steps)
    # the first step's policy is the reference: the DPO loss is log 2 per pair
    assert steps[0]["loss"] == pytest.approx(0.6931, abs=1e-3)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path, model_dir):
    """Each rank generates for its own prompts (batch 1 each) = one process with batch 2: same samples (the
    seeds follow the prompts), same losses and metrics up to float rounding, same weights."""
    prompts = prompts_file(tmp_path / "prompts.jsonl")
    env = {**os.environ, "WEAKWATER_NO_PROGRESS": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    common = [str(model_dir), str(prompts)]
    one = subprocess.run([sys.executable, str(SCRIPT), *common, str(tmp_path / "one"), "batch_size=2", "max_steps=4"],
                         env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT)]
    two = subprocess.run([*cmd, *common, str(tmp_path / "two"), "batch_size=1", "max_steps=4"],
                         env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    a = [r for r in records(tmp_path / "one") if "loss" in r]
    b = [r for r in records(tmp_path / "two") if "loss" in r]
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        # kl, clip and entropy are (sum, count) metrics: global token means, equal to the 1-process ones
        for key in ("loss", "grad_norm", "reward", "completion_len", "zero_adv_groups", "kl", "clip_low", "entropy"):
            assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-5), (key, x, y)
    wa = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


@pytest.mark.parametrize("stage_cls", [RLStage, OnlineDPOStage])
def test_packed_updates_equal_padded_ones(tmp_path, model_dir, tok, stage_cls):
    """Packing the update's sequences (the default) changes the layout, not the result: same losses and
    metrics step by step, same weights, with a reference (KL / DPO) and, for GRPO, a PPO-style reuse."""
    (tmp_path / "band_reward.py").write_text(CUSTOM_REWARD)
    # room for two sequences per row: --max-prompt-len sets the row width, the prompts are far shorter
    kw = dict(max_steps=3, beta=0.05, max_prompt_len=56, reward=[f"{tmp_path / 'band_reward.py'}:band"])
    if stage_cls is RLStage:
        kw.update(ppo_epochs=2)
    cls = RLConfig if stage_cls is RLStage else OnlineDPOConfig
    runs, rows = {}, {}
    for pack in (True, False):
        stage = stage_cls(rl_config(tmp_path, model_dir, f"pack{pack}", cls, pack=pack, **kw), tok)
        layout = stage.pack
        shapes = rows[pack] = []
        stage.pack = lambda done, keep, layout=layout, shapes=shapes: shapes.append(layout(done, keep)) or shapes[-1]
        Trainer(stage.cfg, stage, tokenizer=tok).fit()
        runs[pack] = [r for r in records(tmp_path / f"pack{pack}") if "loss" in r]
    assert all("segment_ids" in b for b in rows[True]) and not any("segment_ids" in b for b in rows[False])
    assert any(int(b["segment_ids"].max()) + 1 > len(b["input_ids"]) for b in rows[True])  # rows shared
    assert len(runs[True]) == len(runs[False]) == 3
    for a, b in zip(runs[True], runs[False]):
        for key in ("loss", "grad_norm", "reward", "kl", "entropy", "reward_margin"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (key, a, b)
    wa = load_file(str(tmp_path / "packTrue" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "packFalse" / "final" / "model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_rl_reports_no_loss_spikes_by_default_online_dpo_does():
    """The GRPO loss sits near 0 and changes sign, so a ratio to its running mean means nothing."""
    assert RLConfig().spike_factor == 0 and OnlineDPOConfig().spike_factor == 3.0


def test_rl_has_no_seq_len_flag_it_would_overwrite(capsys):
    """The sequence length of an RL update follows from the prompt and reply limits: no dead --seq-len flag."""
    from weakwater.cli import main

    for command in ("rl", "online-dpo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "--max-new-tokens" in out and "--seq-len" not in out
    assert RLConfig(max_prompt_len=100, max_new_tokens=28).seq_len == 128
