"""The stage contract: hooks are called in the declared mode, and their state resumes exactly."""

from __future__ import annotations

import json

import torch

from weakwater.model.loglik import token_logprobs
from weakwater.train.config import TrainConfig

from .test_trainer import TINY_MODEL, run


class RolloutStage:
    """An online stage in miniature: batches hold prompts, ``rollout`` samples continuations from the live
    model with ``ctx.generator`` and rewards "next token = previous + 1"; the loss is REINFORCE against a
    running-mean baseline, which is stage state (checkpointed through ``state_dict``)."""

    name = "rollout"

    def __init__(self) -> None:
        self.baseline = 0.0
        self.rollouts = 0
        self.modes: list[tuple] = []  # (grad enabled, model training, autocast enabled) per rollout
        self.loss_modes: list[tuple[bool, bool]] = []  # (train flag, model training) per loss call
        self.setup_ctx = None

    def datasets(self):
        g = torch.Generator().manual_seed(0)
        items = [torch.randint(0, 64, (4,), generator=g) for _ in range(48)]
        return items[:32], items[32:]

    def collate(self, samples):
        return {"prompt": torch.stack(samples)}

    def setup(self, ctx):
        self.setup_ctx = ctx

    def rollout(self, ctx, batch):
        self.modes.append((torch.is_grad_enabled(), ctx.model.training, torch.is_autocast_enabled(ctx.device.type)))
        ids = batch["prompt"]
        for _ in range(6):
            probs = torch.softmax(ctx.model(ids)[:, -1].float(), dim=-1)
            ids = torch.cat([ids, torch.multinomial(probs, 1, generator=ctx.generator)], dim=1)
        new = ids[:, 4:]
        reward = (new == (ids[:, 3:-1] + 1) % 64).float()
        advantage = reward - self.baseline
        self.baseline = 0.9 * self.baseline + 0.1 * float(reward.mean())
        self.rollouts += 1
        return {"input_ids": ids[:, :-1], "labels": ids[:, 1:], "advantage": advantage, "reward": reward}

    def loss(self, model, batch, *, train):
        self.loss_modes.append((train, model.training))
        logp = token_logprobs(model(batch["input_ids"]), batch["labels"])[:, 3:]  # the sampled tokens only
        total = -(batch["advantage"] * logp).sum()
        return total, torch.tensor(float(logp.numel())), {"reward": batch["reward"].mean()}

    def state_dict(self):
        return {"baseline": self.baseline, "rollouts": self.rollouts}

    def load_state_dict(self, state):
        self.baseline, self.rollouts = state["baseline"], state["rollouts"]


def make_cfg(shards, out, **overrides) -> TrainConfig:
    fields = dict(data=str(shards), out=str(out), batch_size=4, seq_len=16, lr=3e-3, warmup_steps=2,
                  log_every=2, eval_every=4, eval_batches=2, save_every=4, max_steps=8, plot=False,
                  model=dict(TINY_MODEL))  # fmt: skip
    return TrainConfig(**{**fields, **overrides})


def test_rollout_runs_without_grad_in_eval_mode_under_autocast_and_the_loss_in_train_mode(shards, tmp_path):
    stage = RolloutStage()
    trainer = run(
        make_cfg(shards, tmp_path / "run", dtype="bf16", max_steps=3, grad_accum=2, save_every=0), stage=stage
    )
    ctx = stage.setup_ctx
    assert ctx is not None and ctx.model is trainer.model and ctx.step == 3 and ctx.total_steps == 3
    assert (ctx.rank, ctx.world_size, ctx.dtype) == (0, 1, torch.bfloat16)
    # 3 steps x 2 micro-batches, then one evaluation of 2 validation batches: every batch the loss sees
    assert stage.rollouts == len(stage.modes) == 3 * 2 + 2
    assert set(stage.modes) == {(False, False, True)}, stage.modes  # no grad, eval mode, autocast
    assert stage.loss_modes == [(True, True)] * 6 + [(False, False)] * 2  # train mode again for the loss


def test_resume_with_rollouts_is_bitwise_equal(shards, tmp_path):
    full_stage = RolloutStage()
    full = run(make_cfg(shards, tmp_path / "full"), stage=full_stage)
    part = run(make_cfg(shards, tmp_path / "part"), stop_at=5, stage=RolloutStage())  # resumes from step 5, not 4
    assert part.interrupted and part.step == 5
    resumed_stage = RolloutStage()
    resumed = run(make_cfg(shards, tmp_path / "part", resume=True), stage=resumed_stage)
    assert resumed.step == full.step == 8
    assert resumed_stage.rollouts == full_stage.rollouts and resumed_stage.baseline == full_stage.baseline
    assert torch.equal(resumed.ctx.generator.get_state(), full.ctx.generator.get_state())
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


class RatioMetricStage(RolloutStage):
    """Reports one metric as a plain mean and as a (sum, count) pair, over micro-batches of unequal size."""

    def loss(self, model, batch, *, train):
        logp = token_logprobs(model(batch["input_ids"]), batch["labels"])[:, 3:]
        n = 1 + self.rollouts % 2  # the micro-batches count 1 and 2 "tokens", alternately
        value = torch.tensor(float(self.rollouts % 2))  # 0 on the 1-token micro-batch, 1 on the 2-token one
        metrics = {"plain": value, "pooled": (value * n, torch.tensor(float(n)))}
        return -(batch["advantage"] * logp).sum(), torch.tensor(float(logp.numel())), metrics


def test_sum_count_metrics_are_pooled_over_micro_batches(shards, tmp_path):
    """(sum, count) metrics are the ratio of sums (2/3 here), plain ones the mean over micro-batches (1/2)."""
    run(make_cfg(shards, tmp_path / "run", max_steps=2, grad_accum=2, log_every=1, eval_every=0, save_every=0),
        stage=RatioMetricStage())  # fmt: skip
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "loss" in r]
    assert len(steps) == 2
    for r in steps:
        assert r["plain"] == 0.5 and abs(r["pooled"] - 2 / 3) < 1e-6, r
