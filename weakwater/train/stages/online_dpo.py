"""``weakwater online-dpo``: DPO on pairs the current policy samples itself (online / iterative DPO).

Each step the rollout samples ``--group-size`` (>= 2) replies per prompt from the live weights, scores them
with the same reward functions as ``weakwater rl``, and keeps the best and the worst reply as the chosen /
rejected pair (a prompt whose replies all score the same gives no pair). The loss is the offline stage's
(:func:`weakwater.train.losses.preference_loss`: sigmoid, IPO or SimPO) against the start model as
reference: LoRA adapters switched off, or a frozen copy of ``--init``; SimPO needs none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from weakwater.data.packing import model_inputs
from weakwater.model.loglik import per_sample_sum, sequence_logprobs
from weakwater.train.config import ConfigError
from weakwater.train.losses import preference_loss
from weakwater.train.stages.dpo import preference_problems
from weakwater.train.stages.rl import RLConfig, RLStage


@dataclass
class OnlineDPOConfig(RLConfig):
    out: str = field(default="runs/online-dpo", metadata={"help": "run directory (checkpoints, metrics, final model)"})
    lr: float = field(default=5e-6, metadata={"help": "peak learning rate"})
    group_size: int = field(default=4, metadata={"help": "replies sampled per prompt; best and worst form the pair"})
    loss_type: str = field(default="sigmoid", metadata={"help": "sigmoid (DPO), ipo or simpo (reference-free)"})
    beta: float = field(default=0.1, metadata={"help": "DPO/IPO/SimPO temperature beta"})
    simpo_gamma: float = field(default=0.5, metadata={"help": "SimPO target reward margin gamma"})
    spike_factor: float = field(
        default=3.0, metadata={"help": "log a loss spike above this x the running mean (0: no spike detection)"}
    )

    def validate(self) -> None:
        super().validate()
        problems = preference_problems(self.loss_type, self.beta)
        if self.ppo_epochs != 1:
            problems.append("--ppo-epochs applies to weakwater rl only")
        if problems:
            raise ConfigError("invalid config: " + "; ".join(problems))


class OnlineDPOStage(RLStage):
    name = "online-dpo"

    def __init__(self, cfg: OnlineDPOConfig, tokenizer: Any) -> None:
        super().__init__(cfg, tokenizer)
        self.cfg: OnlineDPOConfig = cfg

    def needs_reference(self) -> bool:
        return self.cfg.loss_type != "simpo"

    @torch.no_grad()
    def _generate(self, ctx: Any, batch: dict[str, Any], rollout_no: int) -> dict[str, Any]:
        G = self.cfg.group_size
        done, total, parts = self._sample_and_score(ctx.model, batch, rollout_no)
        grouped = total.view(-1, G)
        # First best and first worst of each group (ties: the earliest sample, so the choice is deterministic).
        best, worst = grouped.argmax(dim=1), grouped.argmin(dim=1)
        pairs = [(g * G + int(b), g * G + int(w)) for g, (b, w) in enumerate(zip(best, worst)) if b != w]
        pairs = [(c, r) for c, r in pairs if total[c] > total[r]]
        empty = not pairs
        if empty:  # keep one (zero-weighted) pair so every rank runs a forward and backward
            pairs = [(0, 0)]
        rows = [c for c, _ in pairs] + [r for _, r in pairs]
        packed = {k: v.to(ctx.device) for k, v in self.pack(done, rows).items()}
        out: dict[str, Any] = {**packed, "pairs": len(pairs), "empty": empty}
        if self.ref_model is not None or self.lora_model is not None:
            tokens, seg = self._reference_logps(packed), packed.get("segment_ids")
            ref = tokens.sum(-1) if seg is None else per_sample_sum(tokens, seg, len(rows))
            out["ref_chosen"], out["ref_rejected"] = ref[: len(pairs)], ref[len(pairs) :]
        metrics = self._reward_metrics(done, total, parts)
        metrics["pair_share"] = torch.tensor(0.0 if empty else len(pairs) / len(batch["index"]), dtype=torch.float64)
        out["metrics"] = {k: v.float().to(ctx.device) for k, v in metrics.items()}
        return out

    def loss(
        self, model: torch.nn.Module, batch: dict[str, Any], *, train: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        n = batch["pairs"]
        logits = model(batch["input_ids"], **model_inputs(batch))
        logps, lengths = sequence_logprobs(logits, batch["labels"], batch.get("segment_ids"), 2 * n)
        out = preference_loss(
            self.cfg.loss_type,
            logps[:n],
            logps[n:],
            batch.get("ref_chosen"),
            batch.get("ref_rejected"),
            self.cfg.beta,
            lengths[:n],
            lengths[n:],
            self.cfg.simpo_gamma,
        )
        loss = out.losses.sum()
        count = torch.tensor(float(n), device=loss.device)
        if batch["empty"]:
            loss, count = loss * 0.0, count * 0.0
        metrics = {
            **batch["metrics"],
            "reward_margin": (out.chosen_rewards - out.rejected_rewards).mean(),
            "reward_acc": (out.chosen_rewards > out.rejected_rewards).float().mean(),
        }
        return loss, count, metrics
