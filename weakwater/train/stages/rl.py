"""``weakwater rl``: reinforcement learning on verifiable rewards, the GRPO family.

Each optimizer step's batch is built by the policy itself (the stage's ``rollout`` hook, run by the trainer
under no-grad in eval mode): for every prompt, G completions are sampled with the KV-cache engine from the
live weights, scored by the weighted reward functions (:mod:`weakwater.rl.rewards`), and turned into
group-relative advantages; the loss is then the clipped policy-gradient objective (:mod:`weakwater.rl.grpo`).

- ``--ppo-epochs K`` > 1: one rollout batch serves K optimizer steps (the log-probs at rollout time are the
  ratio's denominator; the loader's prompts of the K-1 reuse steps are not used). It is saved with every
  checkpoint, so a run stopped between those steps resumes exactly.
- The reference for the KL term is the start model: with LoRA the same weights with the adapters switched
  off, otherwise a frozen copy loaded from ``--init``; ``--beta 0`` holds no reference at all.
- Every rank generates for its own share of the prompts; the sampling seeds are derived from the prompt's
  dataset index (see :mod:`weakwater.rl.rollout`), so the run does not depend on how prompts are split.
- Held-out greedy accuracy and format rate on ``--val-data`` every ``--eval-every`` steps; ``reward.png``
  plots the rewards, accuracy and held-out accuracy against steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from weakwater.data.packing import model_inputs
from weakwater.data.prompts import PromptDataset, collate_prompts
from weakwater.infer.sampling import SamplingParams
from weakwater.model.io import load_model
from weakwater.model.loglik import token_logprobs
from weakwater.model.lora import lora_disabled, lora_modules
from weakwater.rl.grpo import LOSS_AGGREGATIONS, equal_groups, group_advantages, policy_loss, token_entropy_sum
from weakwater.rl.rewards import parse_rewards, score
from weakwater.rl.rollout import Completions, pack, sample_completions, sample_seed
from weakwater.train.config import ConfigError, FineTuneRecipe, TrainConfig


@dataclass
class RLConfig(FineTuneRecipe, TrainConfig):
    data_is_jsonl: ClassVar[bool] = True

    data: str = field(
        default="",
        metadata={"help": "prompts JSONL: MiniMind {conversations}, {prompt, answer} or GSM8K {question, answer}"},
    )
    val_data: str | None = field(
        default=None, metadata={"help": "held-out prompts with answers: greedy accuracy every --eval-every steps"}
    )
    out: str = field(default="runs/rl", metadata={"help": "run directory (checkpoints, metrics, final model)"})
    lr: float = field(default=1e-6, metadata={"help": "peak learning rate"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warmup steps"})
    batch_size: int = field(default=4, metadata={"help": "prompts per micro-batch per device (x --group-size replies)"})
    strict: bool = field(default=False, metadata={"help": "stop at the first malformed record instead of skipping it"})
    group_size: int = field(default=8, metadata={"help": "completions sampled per prompt (G)"})
    max_new_tokens: int = field(default=256, metadata={"help": "completion length limit"})
    max_prompt_len: int = field(default=256, metadata={"help": "longer prompts are skipped (counted)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the rollouts"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling threshold of the rollouts"})
    top_k: int = field(default=0, metadata={"help": "top-k of the rollouts (0: off)"})
    reward: list[str] = field(
        default_factory=lambda: ["math", "format=0.2"],
        metadata={
            "help": "comma-separated NAME[=WEIGHT]: math, format, length, repetition or MODULE:FN / FILE.py:FN "
            "with TRL's fn(prompts, completions, **kwargs) -> list[float]"
        },
    )
    length_limit: int = field(default=200, metadata={"help": "the length reward's limit in tokens"})
    repetition_n: int = field(default=4, metadata={"help": "n-gram size of the repetition reward"})
    scale_rewards: bool = field(
        default=True, metadata={"help": "divide advantages by the group's std (GRPO); --no-scale-rewards: Dr. GRPO"}
    )
    loss_agg: str = field(
        default="sequence",
        metadata={"help": "sequence (GRPO: token mean per reply), token (DAPO) or constant (Dr. GRPO)"},
    )
    beta: float = field(default=0.0, metadata={"help": "KL(policy || start model) weight, k3 estimator (0: none)"})
    eps_low: float = field(default=0.2, metadata={"help": "PPO clip: ratio >= 1 - eps_low"})
    eps_high: float = field(default=0.2, metadata={"help": "PPO clip: ratio <= 1 + eps_high (DAPO: 0.28)"})
    ppo_epochs: int = field(default=1, metadata={"help": "optimizer steps per rollout batch"})
    drop_equal_groups: bool = field(
        default=True, metadata={"help": "leave groups whose rewards are all equal out of the loss (no signal)"}
    )
    pack: bool = field(
        default=True,
        metadata={"help": "pack the update's sequences into rows (block-diagonal attention); --no-pack: right-pad"},
    )
    rollout_rows: int = field(default=0, metadata={"help": "completions decoded together (0: a whole micro-batch)"})
    fast_rollout: bool = field(
        default=True, metadata={"help": "fused-weight decoding engine for rollouts where it applies (not LoRA)"}
    )
    spike_factor: float = field(
        default=0.0,
        metadata={"help": "loss spike warnings (0: off: the policy-gradient loss sits near 0 and changes sign)"},
    )
    eval_limit: int = field(default=200, metadata={"help": "held-out prompts scored per evaluation"})
    eval_every: int = field(
        default=50, metadata={"help": "held-out greedy accuracy every N steps (0: only at the end)"}
    )

    # The longest sequence a loss sees: set from the two limits above, so it is not a flag of its own.
    seq_len: int = field(default=512, metadata={"help": "--max-prompt-len + --max-new-tokens", "derived": True})

    def __post_init__(self) -> None:
        self.seq_len = self.max_prompt_len + self.max_new_tokens

    def validate(self) -> None:
        super().validate()
        problems = []

        def need(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        need(bool(self.init), "--init is required: RL starts from a trained (SFT/distilled) model")
        need(self.group_size >= 2, f"--group-size must be >= 2 (advantages compare replies), got {self.group_size}")
        need(self.max_new_tokens >= 1, f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        need(self.max_prompt_len >= 1, f"--max-prompt-len must be >= 1, got {self.max_prompt_len}")
        need(self.temperature > 0, f"--temperature must be > 0 (rollouts sample), got {self.temperature}")
        need(0 < self.top_p <= 1, f"--top-p must be in (0, 1], got {self.top_p}")
        need(self.loss_agg in LOSS_AGGREGATIONS, f"--loss-agg must be one of {', '.join(LOSS_AGGREGATIONS)}")
        need(self.beta >= 0, f"--beta must be >= 0, got {self.beta}")
        need(0 <= self.eps_low < 1 and self.eps_high >= 0, "--eps-low must be in [0, 1) and --eps-high >= 0")
        need(self.ppo_epochs >= 1, f"--ppo-epochs must be >= 1, got {self.ppo_epochs}")
        need(self.eval_limit >= 1, f"--eval-limit must be >= 1, got {self.eval_limit}")
        need(not self.fsdp, "--fsdp: rollouts decode with whole weights on each rank; run RL under DDP (torchrun)")
        try:
            parse_rewards(self.reward, self.length_limit, self.repetition_n)
        except ValueError as e:
            problems.append(f"--reward: {e}")
        if problems:
            raise ConfigError("invalid config: " + "; ".join(problems))


def last_user_text(messages: list[dict[str, str]]) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


class RLStage:
    name = "rl"

    def __init__(self, cfg: RLConfig, tokenizer: Any) -> None:
        if tokenizer is None or tokenizer.im_end_id is None:
            raise ConfigError("weakwater rl needs a chat tokenizer with <|im_end|> (the --init model's)")
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.rewards = parse_rewards(cfg.reward, cfg.length_limit, cfg.repetition_n)
        self.needs_answer = any(r.name == "math" for r in self.rewards)
        self.train_set: PromptDataset | None = None
        self.val_set: PromptDataset | None = None
        self.ref_model: torch.nn.Module | None = None
        self.lora_model: torch.nn.Module | None = None
        # Rollout batches kept for the --ppo-epochs reuse steps, one per micro-batch: saved in checkpoints.
        self.buffer: list[dict[str, Any]] = []
        self._step, self._micro = -1, 0

    # ------------------------------------------------------------------ data
    def datasets(self) -> tuple[PromptDataset, None]:
        cfg = self.cfg
        self.train_set = PromptDataset(cfg.data, self.tokenizer, cfg.max_prompt_len, cfg.strict, self.needs_answer)
        if cfg.val_data:
            self.val_set = PromptDataset(cfg.val_data, self.tokenizer, cfg.max_prompt_len, cfg.strict, True)
        # The held-out set is scored by generation in evaluate(), not by a validation loss: no val dataset.
        return self.train_set, None

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_prompts(samples)

    # ------------------------------------------------------------------ hooks
    def setup(self, ctx: Any) -> None:
        mc = ctx.model.config
        if self.cfg.seq_len > mc.max_seq_len:
            raise ConfigError(
                f"--max-prompt-len {self.cfg.max_prompt_len} + --max-new-tokens {self.cfg.max_new_tokens} exceeds "
                f"the model's context ({mc.max_seq_len})"
            )
        for split, ds in (("train", self.train_set), ("held-out", self.val_set)):
            if ds is not None:
                ctx.say(f"rl {split} prompts: {len(ds)}, {ds.skipped.summary()}")
        if not self.needs_reference():
            return
        if any(True for _ in lora_modules(ctx.model)):
            self.lora_model = ctx.model  # the reference is the base: the same weights, adapters off
        else:
            self.ref_model = load_model(self.cfg.init, device=ctx.device).eval().requires_grad_(False)

    def needs_reference(self) -> bool:
        return self.cfg.beta > 0  # beta 0 holds no reference model at all

    def _reference_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-token log-probs of the batch's labels under the reference (the start model)."""
        if self.lora_model is not None:
            with lora_disabled(self.lora_model):
                return token_logprobs(self.lora_model(batch["input_ids"], **model_inputs(batch)), batch["labels"])
        assert self.ref_model is not None, "setup() loads the reference when --beta > 0"
        return token_logprobs(self.ref_model(batch["input_ids"], **model_inputs(batch)), batch["labels"])

    def pack(self, done: Completions, rows: list[int]) -> dict[str, torch.Tensor]:
        """The completions ``rows`` of a rollout as the update's tensors (packed unless --no-pack)."""
        return pack(
            [done.prompt_ids[r] for r in rows],
            [done.completion_ids[r] for r in rows],
            self.tokenizer.eos_id,
            self.cfg.seq_len if self.cfg.pack else 0,
        )

    def rollout(self, ctx: Any, batch: dict[str, Any]) -> dict[str, Any]:
        """Generate, score and pack one micro-batch (or hand back the stored one on a reuse step)."""
        cfg = self.cfg
        if ctx.step != self._step:
            self._step, self._micro = ctx.step, 0
        micro, self._micro = self._micro, self._micro + 1
        if ctx.step % cfg.ppo_epochs:
            if micro >= len(self.buffer):
                raise RuntimeError("rl: a --ppo-epochs reuse step found no stored rollout (resumed from elsewhere?)")
            return self.buffer[micro]
        if micro == 0:
            self.buffer = []
        out = self._generate(ctx, batch, ctx.step // cfg.ppo_epochs)
        if cfg.ppo_epochs > 1:
            self.buffer.append(out)
        return out

    @torch.no_grad()
    def _sample_and_score(
        self, model: torch.nn.Module, batch: dict[str, Any], rollout_no: int
    ) -> tuple[Completions, torch.Tensor, dict[str, torch.Tensor]]:
        """G completions of every prompt in ``batch`` from the live weights, and their rewards: the weighted
        total per completion and each reward's values (what :func:`weakwater.rl.rewards.score` returns)."""
        cfg, tok, G = self.cfg, self.tokenizer, self.cfg.group_size
        seeds = [sample_seed(cfg.seed, rollout_no, i, j) for i in batch["index"].tolist() for j in range(G)]
        params = SamplingParams(
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k
        )
        done = sample_completions(
            model, batch["prompt_ids"], seeds, params, tok.im_end_id, G, cfg.rollout_rows, cfg.fast_rollout
        )
        texts = [tok.decode(ids[:-1] if fin else ids) for ids, fin in zip(done.completion_ids, done.finished)]
        messages = [m for m in batch["messages"] for _ in range(G)]
        total, parts = score(
            self.rewards,
            [last_user_text(m) for m in messages],
            texts,
            answer=[a for a in batch["answers"] for _ in range(G)],
            messages=messages,
            completion_ids=done.completion_ids,
            finished=done.finished,
        )
        return done, total, parts

    @staticmethod
    def _reward_metrics(
        done: Completions, total: torch.Tensor, parts: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Mean reward, each reward's mean, accuracy (when ``math`` is scored) and completion length."""
        metrics = {f"reward_{name}": values.nanmean() for name, values in parts.items() if not values.isnan().all()}
        metrics["reward"] = total.mean()
        if "math" in parts and not parts["math"].isnan().all():
            metrics["accuracy"] = parts["math"].nanmean()
        metrics["completion_len"] = torch.tensor([len(c) for c in done.completion_ids], dtype=torch.float64).mean()
        return metrics

    @torch.no_grad()
    def _generate(self, ctx: Any, batch: dict[str, Any], rollout_no: int) -> dict[str, Any]:
        cfg, G = self.cfg, self.cfg.group_size
        model, device = ctx.model, ctx.device
        done, total, parts = self._sample_and_score(model, batch, rollout_no)
        advantages = group_advantages(total, G, cfg.scale_rewards)
        flat = equal_groups(total, G)
        keep = ~flat if cfg.drop_equal_groups else torch.ones_like(flat)
        empty = not bool(keep.any())
        if empty:  # still run one group through the loss (zero-weighted) so every rank does a backward
            keep[0] = True
        rows = keep.repeat_interleave(G).nonzero().flatten().tolist()
        packed = {k: v.to(device) for k, v in self.pack(done, rows).items()}
        out: dict[str, Any] = {**packed, "advantages": advantages[rows].float().to(device), "empty": empty}
        if cfg.ppo_epochs > 1:
            out["old_logp"] = token_logprobs(
                model(packed["input_ids"], **model_inputs(packed)), packed["labels"]
            ).float()
        if self.ref_model is not None or self.lora_model is not None:
            out["ref_logp"] = self._reference_logps(packed).float()
        metrics = self._reward_metrics(done, total, parts)
        metrics["finished"] = torch.tensor(done.finished, dtype=torch.float64).mean()
        metrics["zero_adv_groups"] = flat.double().mean()
        out["metrics"] = {k: v.float().to(device) for k, v in metrics.items()}
        return out

    def loss(
        self, model: torch.nn.Module, batch: dict[str, Any], *, train: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        cfg = self.cfg
        logits = model(batch["input_ids"], **model_inputs(batch))
        logp = token_logprobs(logits, batch["labels"])
        out = policy_loss(
            logp,
            batch.get("old_logp"),
            batch["advantages"],
            batch["mask"],
            batch.get("ref_logp"),
            cfg.beta,
            cfg.eps_low,
            cfg.eps_high,
            cfg.loss_agg,
            cfg.max_new_tokens,
            batch.get("segment_ids"),
        )
        loss, count = out.loss, out.count
        if batch["empty"]:
            loss, count = loss * 0.0, count * 0.0
        # Per-token statistics as (sum, count): the trainer turns them into the global token mean over
        # micro-batches and ranks (a mean of per-rank means would weigh a short rank's tokens more).
        # An "empty" batch (every group dropped) carries a stand-in group that must not count here either.
        entropy, positions = token_entropy_sum(logits.detach(), batch["mask"])
        pooled = {**out.token_means(), "entropy": (entropy, torch.tensor(float(positions), device=entropy.device))}
        keep = 0.0 if batch["empty"] else 1.0
        metrics = {**batch["metrics"], **{k: (s * keep, n * keep) for k, (s, n) in pooled.items()}}
        return loss, count, metrics

    # ------------------------------------------------------------------ evaluation and state
    @torch.no_grad()
    def held_out(self, ctx: Any) -> dict[str, float]:
        """Greedy accuracy (math reward) and think/answer format rate on the held-out prompts, this rank's
        share, summed over ranks."""
        from weakwater.rl.rewards import format_reward, math_reward
        from weakwater.train import distributed as wwdist

        assert self.val_set is not None
        n = min(len(self.val_set), self.cfg.eval_limit)
        mine = list(range(ctx.rank, n, ctx.world_size))
        totals = torch.zeros(3, dtype=torch.float64, device=ctx.device)
        if mine:
            tok = self.tokenizer
            items = [self.val_set[i] for i in mine]
            params = SamplingParams(max_new_tokens=self.cfg.max_new_tokens)
            done = sample_completions(
                ctx.model, [it["prompt_ids"] for it in items], [0] * len(items), params, tok.im_end_id, 1,
                self.cfg.rollout_rows, self.cfg.fast_rollout,
            )  # fmt: skip
            texts = [tok.decode(ids[:-1] if f else ids) for ids, f in zip(done.completion_ids, done.finished)]
            correct = math_reward([], texts, answer=[it["answer"] for it in items])
            formatted = format_reward([], texts)
            totals += torch.tensor([sum(correct), sum(formatted), len(items)], dtype=torch.float64, device=ctx.device)
        wwdist.all_reduce_sum(totals)
        return {"heldout_accuracy": float(totals[0] / totals[2]), "heldout_format": float(totals[1] / totals[2])}

    def evaluate(self, ctx: Any) -> dict[str, float]:
        results = self.held_out(ctx) if self.val_set is not None else {}
        if ctx.rank == 0:
            metrics = Path(ctx.run_dir) / "metrics.jsonl"
            records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
            if results:
                records.append({"step": ctx.step, **{f"val/{k}": v for k, v in results.items()}})
            plot_rewards(records, Path(ctx.run_dir) / "reward.png", f"rl ({Path(ctx.run_dir).name})")
        return results

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer, "step": self._step, "micro": self._micro}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer, self._step, self._micro = state["buffer"], state["step"], state["micro"]


def plot_rewards(records: list[dict[str, Any]], png: Path, title: str) -> Path | None:
    """Mean total reward, training accuracy and held-out greedy accuracy against steps."""
    series = {
        "reward (mean)": [(r["step"], r["reward"]) for r in records if "reward" in r],
        "train accuracy (sampled)": [(r["step"], r["accuracy"]) for r in records if "accuracy" in r],
        "held-out accuracy (greedy)": [
            (r["step"], r.get("heldout_accuracy", r.get("val/heldout_accuracy")))
            for r in records
            if "heldout_accuracy" in r or "val/heldout_accuracy" in r
        ],
    }
    if not any(series.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, points in series.items():
        if points:
            ax.plot(*zip(*sorted(set(points))), "o-" if "held-out" in label else "-", label=label)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
