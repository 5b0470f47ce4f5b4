"""Preference optimisation (DPO sigmoid, IPO, SimPO) on chosen/rejected pairs.

The reference policy is the starting model (``--init``), obtained in the cheapest correct way:

- SimPO: none needed;
- LoRA on: the same model with adapters disabled (its base weights are frozen, so it *is* the start);
- ``--precompute-ref``: one no-grad pass over train + val with the ``--init`` model, stored in
  ``out/ref_logps.pt`` and reused on resume, so training holds a single model;
- otherwise: a frozen copy of ``--init`` (loaded from disk, not copied from the policy, so a resumed
  run still compares against the true start).

Per-pair loss is summed; the normaliser is the number of pairs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from weakwater.data.dpo import PreferenceDataset, collate_pairs
from weakwater.data.packing import model_inputs
from weakwater.model.io import load_model
from weakwater.model.loglik import sequence_logprobs
from weakwater.model.lora import lora_disabled, lora_modules
from weakwater.train.config import ConfigError
from weakwater.train.losses import DPO_LOSSES, preference_loss
from weakwater.train.stage import Metrics, StageContext
from weakwater.train.stages.common import (
    ChatConfig,
    apply_context,
    check_lengths,
    context_overrides,
    report_trainable,
    say,
)

REF_FILE = "ref_logps.pt"


@dataclass
class DPOConfig(ChatConfig):
    data: str = field(
        default="",
        metadata={
            "help": 'preference pairs JSONL: {"chosen": [...], "rejected": [...]} per line, or a directory made by '
            "`weakwater prepare --chat dpo` (pre-tokenised)"
        },
    )
    out: str = field(default="runs/dpo", metadata={"help": "run directory (checkpoints, metrics, final model)"})
    lr: float = field(default=5e-6, metadata={"help": "peak learning rate (DPO wants a small one)"})
    batch_size: int = field(default=8, metadata={"help": "preference pairs per micro-batch per device"})
    val_data: str | None = field(default=None, metadata={"help": "validation pairs (JSONL or prepare --chat dpo dir)"})
    loss_type: str = field(default="sigmoid", metadata={"help": "sigmoid (DPO), ipo or simpo (reference-free)"})
    beta: float = field(default=0.1, metadata={"help": "DPO/IPO/SimPO temperature beta"})
    simpo_gamma: float = field(default=0.5, metadata={"help": "SimPO target reward margin gamma"})
    precompute_ref: bool = field(
        default=False, metadata={"help": "compute reference log-probs once before training (one model in memory)"}
    )

    def validate(self) -> None:
        super().validate()
        problems = preference_problems(self.loss_type, self.beta)
        if self.loss_type != "simpo" and not self.init:
            problems.append("--init is required: the reference policy is the starting model")
        if problems:
            raise ConfigError("invalid config: " + "; ".join(problems))


def preference_problems(loss_type: str, beta: float) -> list[str]:
    """What is wrong with a preference-loss setting (shared by offline and online DPO)."""
    problems = []
    if loss_type not in DPO_LOSSES:
        problems.append(f"--loss-type must be one of {', '.join(DPO_LOSSES)}, got {loss_type!r}")
    if beta <= 0:
        problems.append(f"--beta must be > 0, got {beta}")
    return problems


class DPOStage:
    name = "dpo"

    def __init__(self, cfg: DPOConfig, tokenizer: Any) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.ref_logps: torch.Tensor | None = None  # (N_train + N_val, 2) chosen/rejected
        self.ref_model: torch.nn.Module | None = None
        self.lora_model: torch.nn.Module | None = None
        self.train_set: PreferenceDataset | None = None
        self.val_set: PreferenceDataset | None = None

    def datasets(self) -> tuple[Dataset, Dataset | None]:
        cfg = self.cfg
        self.train_set = PreferenceDataset(cfg.data, self.tokenizer, cfg.sample_len + 1, cfg.strict)
        if cfg.val_data:
            self.val_set = PreferenceDataset(
                cfg.val_data, self.tokenizer, cfg.sample_len + 1, cfg.strict, index_offset=len(self.train_set)
            )
        for split, ds in (("train", self.train_set), ("val", self.val_set)):
            if ds is not None:
                say(f"dpo {split} data: {len(ds)} pairs, {ds.skipped.summary()}")
        check_lengths(cfg, {"train": self.train_set, "val": self.val_set}, self.name)
        return self.train_set, self.val_set

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate_pairs(samples, self.tokenizer.eos_id, self.cfg.sample_len if self.cfg.pack else 0)

    def setup(self, ctx: StageContext) -> None:
        report_trainable(ctx.model)
        if self.cfg.loss_type == "simpo":
            return
        if any(True for _ in lora_modules(ctx.model)):
            self.lora_model = ctx.model  # reference = the same weights with adapters switched off
            return
        device = ctx.device
        if self.cfg.precompute_ref:
            self.ref_logps = self._reference_logps(Path(self.cfg.out) / REF_FILE, device)
            return
        self.ref_model = self._load_reference(device)

    def _load_reference(self, device: torch.device) -> torch.nn.Module:
        model = load_model(self.cfg.init, device=device)
        apply_context(model, context_overrides(self.cfg))
        model.eval().requires_grad_(False)
        return model

    @torch.no_grad()
    def _reference_logps(self, path: Path, device: torch.device) -> torch.Tensor:
        """Load or compute the reference log-probs of every train and val pair (row = item index)."""
        sets = [s for s in (self.train_set, self.val_set) if s is not None]
        total = sum(len(s) for s in sets)
        # Reused only for the same reference model, data files and sample length (e.g. on --resume).
        key = json.dumps([self.cfg.init, self.cfg.sample_len, *[[str(s.records.path), len(s)] for s in sets]])
        if path.exists():
            stored = torch.load(path, weights_only=True)
            if stored.get("key") == key:
                say(f"dpo: reusing reference log-probs from {path}")
                return stored["logps"].to(device)
        model = self._load_reference(device)
        out = torch.zeros(total, 2)
        for ds in sets:
            for start in range(0, len(ds), self.cfg.batch_size):
                batch = self.collate([ds[i] for i in range(start, min(start + self.cfg.batch_size, len(ds)))])
                batch = {k: v.to(device) for k, v in batch.items()}
                logps, _ = self._logps(model, batch)
                n = len(batch["index"])
                out[batch["index"].cpu()] = torch.stack([logps[:n], logps[n:]], dim=1).cpu()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "logps": out}, path)
        say(f"dpo: stored reference log-probs of {total} pairs in {path}")
        return out.to(device)

    def _reference(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        n = len(batch["index"])
        if self.ref_logps is not None:
            ref = self.ref_logps[batch["index"].to(self.ref_logps.device)]
            return ref[:, 0], ref[:, 1]
        if self.cfg.loss_type == "simpo":
            return None, None
        with torch.no_grad():
            if self.lora_model is not None:
                with lora_disabled(self.lora_model):
                    logps, _ = self._logps(self.lora_model, batch)
            elif self.ref_model is not None:
                logps, _ = self._logps(self.ref_model, batch)
            else:
                raise RuntimeError("dpo: setup() was not run, no reference policy")
        return logps[:n], logps[n:]

    @staticmethod
    def _logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed answer log-probs and answer lengths of the 2B sequences (chosen, then rejected)."""
        logits = model(batch["input_ids"], **model_inputs(batch))
        return sequence_logprobs(logits, batch["labels"], batch.get("segment_ids"), 2 * len(batch["index"]))

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], *, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        n = len(batch["index"])
        logps, lengths = self._logps(model, batch)
        ref_chosen, ref_rejected = self._reference(batch)
        out = preference_loss(
            self.cfg.loss_type,
            logps[:n],
            logps[n:],
            ref_chosen,
            ref_rejected,
            self.cfg.beta,
            lengths[:n],
            lengths[n:],
            self.cfg.simpo_gamma,
        )
        # 0-d tensors left on the device; the trainer logs validation batches' as val_reward_acc etc.
        metrics = {
            "reward_acc": (out.chosen_rewards > out.rejected_rewards).float().mean(),
            "reward_margin": (out.chosen_rewards - out.rejected_rewards).mean(),
            "reward_chosen": out.chosen_rewards.mean(),
            "reward_rejected": out.rejected_rewards.mean(),
            "logp_chosen": logps[:n].detach().mean(),
            "logp_rejected": logps[n:].detach().mean(),
        }
        return out.losses.sum(), torch.tensor(float(n), device=out.losses.device), metrics

    def evaluate(self, ctx: StageContext) -> dict[str, float]:
        """Data counters (the validation rewards and log-probs come from the trainer's val_ metrics)."""
        out: dict[str, float] = {}
        for split, ds in (("train", self.train_set), ("val", self.val_set)):
            if ds is not None:
                out[f"{split}_skipped"] = float(ds.skipped.total)
                out[f"{split}_truncated"] = float(ds.stats["truncated_head"] + ds.stats["truncated_tail"])
        return out
