"""The one training engine. Stages supply data, a collator and a loss; everything else lives here.

Read top to bottom: ``Trainer.__init__`` resolves device, precision, tokenizer, model, data and
optimizer and validates them all before any step runs; ``fit`` is the loop; ``_train_step`` is one
optimizer step over ``grad_accum`` micro-batches; then evaluation, checkpoints, resume and the fault
handling (signals, NaN/Inf steps, rollback, loss spikes).

Design choices worth knowing:

* Losses are sums plus a count (see :class:`weakwater.train.stage.Stage`). Micro-batch gradients are
  accumulated unnormalised and divided once by the global count (all micro-batches, all ranks), so
  ``grad_accum`` x ``batch_size`` and ``world_size`` x ``batch_size`` give the gradient of one big batch.
* Weight decay applies to the attention and MLP matrices only. Norm gains and the (tied) embedding
  get none: decay would keep pulling the rows of rarely seen tokens and the norm scales towards zero
  between their few gradient updates, which is shrinkage, not regularisation.
* The loss is read on the host every ``log_every`` steps only. One scalar *is* read every step: the
  "are loss and gradients finite" flag that decides whether the optimizer may step (GradScaler does
  the same); skipping a poisoned update cannot be decided later. Under FSDP the gradient scale is
  also read (DTensor gradients take a Python scalar).
* Checkpoints carry the full state (model, optimizer, schedule, scaler, RNG of every rank, data
  position), so a resumed run on CPU in fp32 is bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from weakwater.config import save_resolved, to_dict
from weakwater.data.loader import BatchLoader
from weakwater.device import pick_device, pick_dtype
from weakwater.model.config import ModelConfig, preset
from weakwater.model.io import CONFIG_FILE, FORMAT, WEIGHTS_FILE, file_sha256, save_model, weights_state_dict
from weakwater.model.llama import Transformer
from weakwater.train import distributed as wwdist
from weakwater.train.checkpoint import CheckpointManager, test_pause
from weakwater.train.config import INIT_OVERRIDABLE, ConfigError, TrainConfig
from weakwater.train.stage import (
    Stage,
    StageContext,
    call_evaluate,
    call_rollout,
    call_setup,
    has_rollout,
    load_stage_state,
    stage_state,
)
from weakwater.train.tracking import MetricsLog, Tracker, plot_curves

SHAPE_FIELDS = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "tie_embeddings", "qk_norm")


def _nan_steps_from_env() -> set[int]:
    """Test hook: ``WEAKWATER_TEST_NAN_AT=3,4`` poisons the loss of those step attempts (0-based,
    counted per process) with NaN, to exercise skipping and rollback."""
    raw = os.environ.get("WEAKWATER_TEST_NAN_AT", "")
    return {int(x) for x in raw.split(",") if x.strip()}


def _add_metrics(acc: dict[str, torch.Tensor], metrics: dict[str, Any], device: torch.device) -> None:
    """Sum a micro-batch's stage metrics into ``acc`` without leaving the device."""
    for key, value in metrics.items():
        value = value.detach().float() if isinstance(value, torch.Tensor) else torch.tensor(float(value), device=device)
        acc[key] = acc[key] + value if key in acc else value


def _reduce(
    totals: torch.Tensor, metrics: dict[str, torch.Tensor], n: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum ``[loss, count]`` and the metric sums over ranks in one collective; metrics divided by ``n``."""
    keys = sorted(metrics)
    packed = torch.cat([totals, torch.stack([metrics[k] for k in keys])]) if keys else totals
    wwdist.all_reduce_sum(packed)
    return packed[:2], {k: packed[2 + i] / n for i, k in enumerate(keys)}


@dataclass
class StepResult:
    """What one optimizer step leaves for the next log line (tensors stay on the device until then)."""

    loss_sum: torch.Tensor
    count: torch.Tensor
    grad_norm: torch.Tensor
    tokens: int
    extra: dict[str, Any]


class Trainer:
    """``Trainer(cfg, stage, model=None, tokenizer=None).fit()`` trains and returns ``cfg.out/final``."""

    def __init__(
        self, cfg: TrainConfig, stage: Stage, model: torch.nn.Module | None = None, tokenizer: Any = None
    ) -> None:
        cfg.validate()
        self.cfg = cfg
        self.stage = stage
        self.dist = wwdist.DistInfo.from_env()
        self.device = pick_device(cfg.device, self.dist.local_rank)
        self.dtype = pick_dtype(cfg.dtype, self.device)
        if cfg.fsdp and not self.dist.enabled:
            raise ConfigError("--fsdp shards over several processes: launch with torchrun --nproc_per_node N")
        wwdist.init(self.dist, self.device)
        try:
            self._setup(model, tokenizer)
        except BaseException:
            wwdist.shutdown(clean=False)
            raise

    def _setup(self, model: torch.nn.Module | None, tokenizer: Any) -> None:
        cfg, stage = self.cfg, self.stage
        self.out = Path(cfg.out)
        self.ckpt = CheckpointManager(self.out / "checkpoints", cfg.keep_last)
        self.is_main = self.dist.is_main

        self.tokenizer = tokenizer if tokenizer is not None else self._load_tokenizer()
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every run
        self.model = model if model is not None else self._build_model()
        self.model_config: ModelConfig = self.model.config
        self._check_model()
        self._check_run_dir()
        self.train_data, self.val_data = stage.datasets()
        data_vocab = getattr(self.train_data, "vocab_size", None)
        if data_vocab is not None and data_vocab > self.model_config.vocab_size:
            raise ConfigError(
                f"--data {cfg.data} was tokenized with a {data_vocab}-token vocabulary but the model has "
                f"vocab_size {self.model_config.vocab_size}: use the same tokenizer for prepare and training"
            )
        self._check_data_tokenizer()
        self.loader = BatchLoader(
            self.train_data,
            cfg.batch_size,
            stage.collate,
            seed=cfg.seed,
            shuffle=True,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self.total_steps = cfg.max_steps or max(
            1, math.ceil(cfg.epochs * self.loader.batches_per_epoch / cfg.grad_accum)
        )

        if cfg.lora_rank > 0:
            from weakwater.model.lora import apply_lora

            apply_lora(
                self.model, cfg.lora_rank, cfg.lora_alpha, targets=tuple(cfg.lora_targets), dropout=cfg.lora_dropout
            )
        self.model.to(self.device)
        torch.manual_seed(cfg.seed + self.dist.rank)  # dropout streams differ per rank
        self.forward_model = self._wrap_model()
        self.optimizer = self._build_optimizer()
        self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype == torch.float16 else None
        self.ctx = StageContext(
            cfg=cfg,
            model=self.model,
            tokenizer=self.tokenizer,
            device=self.device,
            dtype=self.dtype,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            generator=self._sampling_generator(),
            run_dir=self.out,
            total_steps=self.total_steps,
        )
        self.rollout = has_rollout(stage)

        # Run state: everything below is saved in checkpoints.
        self.step = 0
        self.lr_scale = 1.0  # halved by every rollback
        self.best_val = math.inf
        self.counters = {"bad_steps": 0, "rollbacks": 0, "spikes": 0, "scaler_skips": 0}
        self.consecutive_bad = 0
        self.loss_ema: float | None = None
        self.tokens_seen = 0

        self.stop_signal: int | None = None
        self._saved_step = -1  # step of the checkpoint this process last wrote
        self.attempts = 0
        self.nan_at = _nan_steps_from_env()
        # Test hook: WEAKWATER_TEST_STEP_PAUSE=SECONDS after each step widens the window a kill can land in.
        self.step_pause = float(os.environ.get("WEAKWATER_TEST_STEP_PAUSE", "0") or 0)
        self.metrics = MetricsLog(self.out / "metrics.jsonl")

    # ------------------------------------------------------------------ setup
    def _sampling_generator(self) -> torch.Generator:
        """The stages' sampling RNG: its own stream per rank, apart from the dropout stream (checkpointed)."""
        seed = int(np.random.SeedSequence([self.cfg.seed, self.dist.rank, 0x5EED]).generate_state(1, np.uint64)[0])
        return torch.Generator(device=self.device).manual_seed(seed)

    def _load_tokenizer(self) -> Any:
        source = self.cfg.tokenizer
        if source is None and self.cfg.init and (Path(self.cfg.init) / "tokenizer.json").is_file():
            source = self.cfg.init
        if source is None:  # a model-only run (tests, custom stages): the final dir gets no tokenizer files
            return None
        from weakwater.tokenizer import load_tokenizer

        return load_tokenizer(source)

    def _build_model(self) -> Transformer:
        """From ``--init`` (plus the allowed overrides) or a fresh ``--preset`` + ``[model]`` overrides."""
        cfg = self.cfg
        if cfg.init:
            from weakwater.model.io import load_model

            model = load_model(cfg.init, device="cpu")
            saved = model.config.to_dict()
            changed = {k: v for k, v in cfg.model_overrides().items() if saved.get(k, v) != v or k not in saved}
            if not changed:
                return model
            fixed = sorted(set(changed) - set(INIT_OVERRIDABLE))
            if fixed:
                raise ConfigError(
                    f"model overrides {', '.join(f'{k}={changed[k]}' for k in fixed)} change the shape of the --init "
                    f"model; only {', '.join(INIT_OVERRIDABLE)} may change when starting from a saved model"
                )
            config = ModelConfig.from_dict({**saved, **changed})
            fresh = Transformer(config)
            fresh.load_state_dict(model.state_dict())
            return fresh
        overrides = cfg.model_overrides()
        if self.tokenizer is not None and "vocab_size" not in overrides:
            overrides["vocab_size"] = self.tokenizer.vocab_size
        try:
            config = preset(cfg.preset, **overrides)
        except TypeError as e:
            raise ConfigError(f"[model] overrides: {e}; valid keys are the ModelConfig fields") from e
        return Transformer(config)

    def _check_model(self) -> None:
        """Shape problems that only show up once tokenizer, model and sequence length meet."""
        cfg, mc = self.cfg, self.model_config
        if self.tokenizer is not None and self.tokenizer.vocab_size > mc.vocab_size:
            raise ConfigError(
                f"the tokenizer has {self.tokenizer.vocab_size} tokens but model vocab_size is {mc.vocab_size}: "
                f"drop the vocab_size override (it defaults to the tokenizer's) or use the model's own tokenizer"
            )
        if cfg.seq_len > mc.max_seq_len and mc.rope_scaling is None:
            raise ConfigError(
                f"--seq-len {cfg.seq_len} exceeds the model's max_seq_len {mc.max_seq_len}: lower --seq-len, "
                f"raise model max_seq_len (from scratch), or set model rope_scaling (linear/yarn) to extend a "
                f"pretrained model's context"
            )

    def _check_data_tokenizer(self) -> None:
        """Token ids only mean something with the tokenizer that produced them."""
        meta_path = Path(self.cfg.data) / "meta.json"
        tok_dir = getattr(self.tokenizer, "dir", None)
        if tok_dir is None or not meta_path.is_file():
            return
        expected = json.loads(meta_path.read_text(encoding="utf-8")).get("tokenizer", {}).get("sha256")
        tok_file = Path(tok_dir) / "tokenizer.json"
        if expected and tok_file.is_file() and file_sha256(tok_file) != expected:
            raise ConfigError(
                f"--data {self.cfg.data} was prepared with a different tokenizer than {tok_dir}: "
                f"re-run `weakwater prepare` with this tokenizer or pass the one it used (--tokenizer)"
            )

    def _check_run_dir(self) -> None:
        """Refuse to mix runs: a new run may not overwrite checkpoints, a resume must match their shape."""
        existing = self.ckpt.candidates()
        if existing and not self.cfg.resume:
            raise ConfigError(
                f"{self.out} already holds checkpoints of a run: pass --resume to continue it or choose another --out"
            )
        if existing and self.cfg.resume:
            saved = existing[0] / CONFIG_FILE
            if saved.is_file():
                theirs = json.loads(saved.read_text()).get("model", {})
                ours = self.model_config.to_dict()
                # A field newer than the checkpoint was at its default then (e.g. qk_norm off).
                defaults = {f.name: f.default for f in fields(ModelConfig)}
                theirs = {k: theirs.get(k, defaults[k]) for k in SHAPE_FIELDS}
                diff = [f"{k}: checkpoint {theirs[k]} vs now {ours[k]}" for k in SHAPE_FIELDS if theirs[k] != ours[k]]
                if diff:
                    raise ConfigError(
                        f"--resume: {existing[0]} was trained with a different model shape ({'; '.join(diff)}); "
                        f"resume with the original --preset/[model] settings or start a new run in another --out"
                    )

    def _wrap_model(self) -> torch.nn.Module:
        """FSDP2 (in place) or DDP around the model, then optional torch.compile; returns what to call."""
        model: torch.nn.Module = self.model
        if self.cfg.fsdp:
            from torch.distributed.fsdp import fully_shard

            for block in self.model.layers:
                fully_shard(block)
            fully_shard(self.model)
        elif self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(self.model, device_ids=ids)
        if self.cfg.compile:
            model = torch.compile(model)
        return model

    def _build_optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        seen: set[int] = set()
        for name, p in self.model.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if p.ndim < 2 or "embed_tokens" in name or "lm_head" in name else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": self.cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        fused = self.device.type == "cuda"
        return torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(self.cfg.beta1, self.cfg.beta2), fused=fused or None)

    # ------------------------------------------------------------------ schedule
    def lr_at(self, step: int) -> float:
        """Linear warmup to ``lr``, cosine decay to ``lr * min_lr_ratio`` at the last step, times the
        rollback scale."""
        cfg = self.cfg
        if step < cfg.warmup_steps:
            factor = (step + 1) / cfg.warmup_steps
        else:
            progress = min(1.0, (step - cfg.warmup_steps) / max(1, self.total_steps - cfg.warmup_steps))
            factor = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return cfg.lr * factor * self.lr_scale

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        pin = self.device.type == "cuda"
        return {
            k: (v.pin_memory().to(self.device, non_blocking=True) if pin else v.to(self.device))
            if isinstance(v, torch.Tensor)
            else v
            for k, v in batch.items()
        }

    # ------------------------------------------------------------------ loop
    def fit(self) -> Path:
        """Train to ``total_steps`` (or until SIGINT/SIGTERM), then save ``out/final`` and return it.

        Run directory: ``config.json`` (resolved config), ``metrics.jsonl``, ``checkpoints/step_*/`` +
        ``checkpoints/latest``, ``best/`` (best validation loss), ``final/`` (a saved model directory that
        every ``--model DIR`` / ``--init DIR`` accepts), ``loss.png``. After an interruption the
        returned path is the checkpoint just written and ``self.interrupted`` is True.
        """
        cfg = self.cfg
        self.interrupted = False
        tracker, bar, old_handlers, clean = Tracker("none", self.out, "", {}), None, {}, False
        try:
            if self.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                save_resolved(cfg, self.out / "config.json")
            resumed_from = self._resume() if cfg.resume else None
            call_setup(self.stage, self.ctx)
            tracker = self._open_tracker()
            old_handlers = self._install_signal_handlers()
            bar = self._progress_bar()
            if self.is_main:
                event = "resume" if resumed_from else "start"
                self.metrics.write({"step": self.step, "event": event, "from": resumed_from})
            window_start, window_tokens = time.perf_counter(), 0
            pending: list[StepResult] = []
            while self.step < self.total_steps:
                if self._should_stop():
                    clean = True
                    return self._interrupt()
                result = self._train_step()
                if result is None:
                    if self.consecutive_bad >= cfg.max_bad_steps:
                        self._rollback()
                        pending = []
                        if bar is not None:
                            bar.n = self.step
                            bar.refresh()
                    continue
                pending.append(result)
                window_tokens += result.tokens
                if bar is not None:
                    bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    self._log(pending, window_tokens / max(elapsed, 1e-9), tracker, bar)
                    pending, window_start, window_tokens = [], time.perf_counter(), 0
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < self.total_steps:
                    self._evaluate_and_keep_best(tracker)
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < self.total_steps:
                    self.save_checkpoint()
            self._evaluate_and_keep_best(tracker)
            self.save_checkpoint()
            final = self._save_final()
            if self.is_main and cfg.plot:
                plot_curves(self.metrics.read(), self.out / "loss.png", f"{self.stage.name} ({self.out.name})")
            clean = True
            return final
        finally:
            if bar is not None:
                bar.close()
            tracker.close()
            self._restore_signal_handlers(old_handlers)
            wwdist.shutdown(clean)

    def _interrupt(self) -> Path:
        """SIGINT/SIGTERM arrived: checkpoint the last finished step and stop."""
        existing = self.ckpt.root / self.ckpt.name(self.step)
        checkpoint = existing if self._saved_step == self.step else self.save_checkpoint()
        self.interrupted = True
        if self.is_main:
            self.metrics.write({"step": self.step, "event": "interrupted", "signal": self.stop_signal})
            print(
                f"\ninterrupted at step {self.step}: checkpoint {checkpoint} written; continue with --resume",
                file=sys.stderr,
            )
        return checkpoint

    def _train_step(self) -> StepResult | None:
        """One optimizer step, or None when it was skipped because the loss or gradients were not finite."""
        cfg = self.cfg
        self.model.train()
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        poison = self.attempts in self.nan_at
        self.attempts += 1
        totals = torch.zeros(2, device=self.device)  # [summed loss, count]
        tokens = 0
        metrics: dict[str, torch.Tensor] = {}
        for micro in range(cfg.grad_accum):
            batch = self.to_device(next(self.loader))
            if self.rollout:
                batch = call_rollout(self.stage, self.ctx, batch)
            ids = batch.get("input_ids")
            tokens += ids.numel() if isinstance(ids, torch.Tensor) else 0
            sync = micro == cfg.grad_accum - 1
            ctx = (
                self.forward_model.no_sync()
                if not sync and hasattr(self.forward_model, "no_sync")
                else contextlib.nullcontext()
            )
            with ctx:
                with self.ctx.autocast():
                    loss, count, extra = self.stage.loss(self.forward_model, batch, train=True)
                if poison:
                    loss = loss * float("nan")
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            totals += torch.stack([loss.detach().float(), count.detach().float()])
            _add_metrics(metrics, extra, self.device)
        # One collective for loss, count and the stage metrics (averaged over micro-batches and ranks).
        totals, extras = _reduce(totals, metrics, cfg.grad_accum * self.dist.world_size)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        # DDP/FSDP average gradients over ranks; turn that into "sum over everything / global count".
        factor = self.dist.world_size / totals[1].clamp(min=1.0)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if cfg.fsdp:
            factor_value = float(factor)  # DTensor gradients take a Python scalar
            for g in grads:
                g.mul_(factor_value)
        elif grads:
            torch._foreach_mul_(grads, factor)
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        # The one per-step host read (see the module docstring): are gradients and loss finite?
        grads_finite, loss_finite = torch.stack([torch.isfinite(norm), torch.isfinite(totals[0])]).tolist()
        if not (grads_finite and loss_finite):
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None and loss_finite:
                self.scaler.update()  # fp16 overflow: GradScaler lowers its scale; not a fault
                self.counters["scaler_skips"] += 1
                return None
            if self.scaler is not None:
                self.scaler.update()
            self.counters["bad_steps"] += 1
            self.consecutive_bad += 1
            if self.is_main:
                self.metrics.write(
                    {"step": self.step, "event": "bad_step", "consecutive": self.consecutive_bad, "lr": lr}
                )
            return None
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.consecutive_bad = 0
        self.step += 1
        self.ctx.step = self.step
        self.tokens_seen += tokens * self.dist.world_size
        if self.step_pause:
            time.sleep(self.step_pause)
        return StepResult(totals[0], totals[1], norm.detach(), tokens * self.dist.world_size, extras)

    def _log(self, pending: list, tokens_per_s: float, tracker: Tracker, bar: Any) -> None:
        """Read the accumulated losses (the only regular host sync), detect spikes, write metrics."""
        keys = sorted({k for p in pending for k in p.extra})
        nan = torch.tensor(math.nan, device=self.device)
        rows = [
            torch.stack([p.loss_sum, p.count, p.grad_norm.float(), *[p.extra.get(k, nan) for k in keys]])
            for p in pending
        ]
        stacked = torch.stack(rows).cpu()  # the one host read of the logging window
        loss = float(stacked[:, 0].sum() / stacked[:, 1].sum().clamp(min=1))
        grad_norm = float(stacked[-1, 2])
        extra = {k: float(stacked[:, 3 + i].nanmean()) for i, k in enumerate(keys)}
        record = {
            "step": self.step,
            "loss": loss,
            "lr": self.lr_at(self.step - 1),
            "grad_norm": grad_norm,
            "tokens_per_s": tokens_per_s,
            "tokens": self.tokens_seen,
            **extra,
            **{k: v for k, v in self.counters.items() if v},
        }
        # A spike is relative to a positive running mean (losses that can go negative, e.g. policy gradients,
        # have no meaningful ratio).
        if self.loss_ema is not None and self.loss_ema > 0 and loss > self.cfg.spike_factor * self.loss_ema:
            self.counters["spikes"] += 1
            record["spike"] = True
            if self.is_main:
                print(
                    f"\nloss spike at step {self.step}: {loss:.4f} > {self.cfg.spike_factor} x running mean "
                    f"{self.loss_ema:.4f}",
                    file=sys.stderr,
                )
        else:  # spikes stay out of the running mean so one spike does not hide the next
            self.loss_ema = loss if self.loss_ema is None else 0.9 * self.loss_ema + 0.1 * loss
        if self.is_main:
            self.metrics.write(record)
            scalars = {"loss": loss, "lr": record["lr"], "tokens_per_s": tokens_per_s, "grad_norm": grad_norm, **extra}
            tracker.log({f"train/{k}": v for k, v in scalars.items()}, self.step)
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{record['lr']:.2e}", tok_s=f"{tokens_per_s:,.0f}")

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean validation loss over ``eval_batches`` fixed (unshuffled) batches, the stage's metrics on
        them (``val_<name>``), plus what the stage's ``evaluate`` hook adds."""
        results: dict[str, float] = {}
        if self.val_data is not None:
            per_rank = self.cfg.batch_size
            if len(self.val_data) < per_rank * self.dist.world_size:
                per_rank = max(1, len(self.val_data) // self.dist.world_size)
            loader = BatchLoader(
                self.val_data,
                per_rank,
                self.stage.collate,
                seed=self.cfg.seed,
                shuffle=False,
                rank=self.dist.rank,
                world_size=self.dist.world_size,
            )
            self.model.eval()
            totals = torch.zeros(2, device=self.device)
            metrics: dict[str, torch.Tensor] = {}
            batches = min(self.cfg.eval_batches, loader.batches_per_epoch)
            for _ in range(batches):
                batch = self.to_device(next(loader))
                if self.rollout:
                    batch = call_rollout(self.stage, self.ctx, batch)
                with self.ctx.autocast():
                    loss, count, extra = self.stage.loss(self.model, batch, train=False)
                totals += torch.stack([loss.float(), count.float()])
                _add_metrics(metrics, extra, self.device)
            self.model.train()
            totals, means = _reduce(totals, metrics, batches * self.dist.world_size)
            keys = sorted(means)
            values = torch.stack([totals[0] / totals[1].clamp(min=1), *[means[k] for k in keys]]).tolist()
            results["val_loss"] = values[0]
            results.update({f"val_{k}": v for k, v in zip(keys, values[1:])})
        results.update(call_evaluate(self.stage, self.ctx))
        return results

    def _evaluate_and_keep_best(self, tracker: Tracker) -> None:
        results = self.evaluate()
        if not results:
            return
        if self.is_main:
            self.metrics.write({"step": self.step, **results})
            tracker.log({f"val/{k}": v for k, v in results.items()}, self.step)
        val = results.get("val_loss")
        if val is not None and val < self.best_val:
            self.best_val = val
            self._save_model_dir(self.out / "best", {"step": self.step, "val_loss": val})

    # ------------------------------------------------------------------ saving
    def _full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """CPU weights of the whole model on rank 0 (gathered under FSDP), None on other ranks."""
        if self.cfg.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            return state if self.is_main else None
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()} if self.is_main else None

    def _plain_model(self) -> Transformer | None:
        """A CPU, adapter-free copy of the current weights for saving (rank 0 only)."""
        state = self._full_state_dict()
        if state is None:
            return None
        with torch.random.fork_rng(devices=[]):  # the throwaway init must not shift the training RNG stream
            plain = Transformer(self.model_config)
        if self.cfg.lora_rank > 0:  # rebuild the adapter layout, load, then fold the adapters in
            from weakwater.model.lora import apply_lora, merge_lora

            apply_lora(plain, self.cfg.lora_rank, self.cfg.lora_alpha, targets=tuple(self.cfg.lora_targets))
            plain.load_state_dict(state)
            return merge_lora(plain)
        plain.load_state_dict(state)
        return plain

    def _save_model_dir(self, path: Path, extra: dict[str, Any]) -> None:
        plain = self._plain_model()
        if plain is not None:
            tok_dir = getattr(self.tokenizer, "dir", None)
            save_model(plain, path, tokenizer_dir=tok_dir, extra={"stage": self.stage.name, **extra})
        wwdist.barrier()

    def _save_final(self) -> Path:
        final = self.out / "final"
        if self.cfg.lora_rank > 0 and self.is_main:
            from weakwater.model.lora import save_adapter

            save_adapter(self.model, self.out / "adapter")
        self._save_model_dir(
            final,
            {
                "step": self.step,
                "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
                "train_config": to_dict(self.cfg),
            },
        )
        if self.is_main:
            print(f"saved final model to {final}", file=sys.stderr)
        return final

    def _run_state(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        return {
            "step": self.step,
            "lr_scale": self.lr_scale,
            "best_val": self.best_val if math.isfinite(self.best_val) else None,
            "counters": self.counters,
            "loss_ema": self.loss_ema,
            "tokens_seen": self.tokens_seen,
            "loader": self.loader.state_dict(),
            "world_size": self.dist.world_size,
            "python_rng": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        }

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_XXXXXXX`` atomically (see :mod:`weakwater.train.checkpoint`)."""
        tmp = self.ckpt.begin(self.step) if self.is_main else None
        tmp = Path(wwdist.broadcast_object(str(tmp) if tmp else None))  # type: ignore[arg-type]
        wwdist.barrier()
        rng = {"torch": torch.get_rng_state(), "sampling": self.ctx.generator.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        torch.save(rng, tmp / f"rng_{self.dist.rank}.pt")
        extra_state = stage_state(self.stage)
        if extra_state is not None:
            torch.save(extra_state, tmp / f"stage_{self.dist.rank}.pt")
        if self.cfg.fsdp:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict

            model_state, optim_state = get_state_dict(self.model, self.optimizer)
            dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp / "sharded"))
        if self.is_main:
            if not self.cfg.fsdp:
                save_file(weights_state_dict(self.model), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            test_pause()
            if self.scaler is not None:
                torch.save(self.scaler.state_dict(), tmp / "scaler.pt")
            meta = {"format": FORMAT, "model": self.model_config.to_dict(), "stage": self.stage.name}
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            (tmp / "state.json").write_text(json.dumps(self._run_state()) + "\n")
        wwdist.barrier()
        final = self.ckpt.commit(tmp, self.step) if self.is_main else None
        wwdist.barrier()
        self._saved_step = self.step
        return Path(wwdist.broadcast_object(str(final) if final else None))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ loading
    def _resume(self) -> str | None:
        """Load the newest checkpoint that verifies (falling back past corrupt ones)."""
        path = self.ckpt.find_valid(warn=self._warn) if self.is_main else None
        name = wwdist.broadcast_object(str(path) if path else None)
        if name is None:
            if self.ckpt.candidates():
                raise ConfigError(
                    f"--resume: every checkpoint in {self.ckpt.root} failed verification (see the warnings above); "
                    f"move them away to start the run over"
                )
            if self.is_main:
                print(f"--resume: no checkpoint in {self.ckpt.root} yet; starting a new run", file=sys.stderr)
            return None
        self.load_checkpoint(Path(name))  # type: ignore[arg-type]
        if self.is_main:
            self.metrics.truncate_after(self.step)
            print(f"resumed from {name} at step {self.step}", file=sys.stderr)
        return str(name)

    def _warn(self, message: str) -> None:
        print(message, file=sys.stderr)
        self.metrics.write({"step": self.step, "event": "warning", "message": message})

    def load_checkpoint(self, path: Path) -> None:
        state = json.loads((path / "state.json").read_text())
        if state["world_size"] != self.dist.world_size:
            raise ConfigError(
                f"{path} was written by {state['world_size']} processes, this run has {self.dist.world_size}: "
                f"resume with the same number of processes (the data order depends on it)"
            )
        if self.cfg.fsdp:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

            model_state, optim_state = get_state_dict(self.model, self.optimizer)
            target = {"model": model_state, "optim": optim_state}
            dcp.load(target, checkpoint_id=str(path / "sharded"))
            set_state_dict(
                self.model, self.optimizer, model_state_dict=target["model"], optim_state_dict=target["optim"]
            )
        else:
            weights = load_file(str(path / WEIGHTS_FILE), device=str(self.device))
            if self.model_config.tie_embeddings and "lm_head.weight" not in weights:
                weights["lm_head.weight"] = weights["embed_tokens.weight"]
            self.model.load_state_dict(weights)
            self.optimizer.load_state_dict(
                torch.load(path / "optimizer.pt", map_location=self.device, weights_only=True)
            )
        if self.scaler is not None and (path / "scaler.pt").exists():
            self.scaler.load_state_dict(torch.load(path / "scaler.pt", weights_only=True))
        self.step = self.ctx.step = state["step"]
        self.lr_scale = state["lr_scale"]
        self.best_val = state["best_val"] if state["best_val"] is not None else math.inf
        self.counters = state["counters"]
        self.loss_ema = state["loss_ema"]
        self.tokens_seen = state["tokens_seen"]
        self.loader.load_state_dict(state["loader"])
        py = state["python_rng"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        np_rng = state["numpy_rng"]
        np.random.set_state((np_rng[0], np.array(np_rng[1], dtype=np.uint32), *np_rng[2:]))
        rng = torch.load(path / f"rng_{self.dist.rank}.pt", weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "sampling" in rng:
            self.ctx.generator.set_state(rng["sampling"])
        if (path / f"stage_{self.dist.rank}.pt").is_file():
            load_stage_state(self.stage, torch.load(path / f"stage_{self.dist.rank}.pt", weights_only=True))
        if rng.get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    def _rollback(self) -> None:
        """After ``max_bad_steps`` consecutive non-finite steps: back to the last good checkpoint, LR halved."""
        lr_scale = self.lr_scale * 0.5
        counters = dict(self.counters, rollbacks=self.counters["rollbacks"] + 1)
        path = self.ckpt.find_valid(warn=self._warn) if self.is_main else None
        name = wwdist.broadcast_object(str(path) if path else None)
        if name is not None:
            self.load_checkpoint(Path(name))  # type: ignore[arg-type]
        self.lr_scale, self.counters, self.consecutive_bad = lr_scale, counters, 0
        if self.is_main:
            where = name or "the current weights (no checkpoint yet; skipped steps changed nothing)"
            message = f"{self.cfg.max_bad_steps} consecutive non-finite steps: rolled back to {where}, LR x{lr_scale:g}"
            print(f"\n{message}", file=sys.stderr)
            self.metrics.write({"step": self.step, "event": "rollback", "to": name, "lr_scale": lr_scale})

    # ------------------------------------------------------------------ signals, progress, trackers
    def _install_signal_handlers(self) -> dict[int, Any]:
        """SIGINT/SIGTERM finish the current step, write a checkpoint and return (a second signal kills)."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            return {}
        old = {}

        def handler(signum: int, _frame: Any) -> None:
            if self.stop_signal is not None:
                signal.signal(signum, old.get(signum, signal.SIG_DFL))
                raise KeyboardInterrupt
            self.stop_signal = signum

        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, handler)
        return old

    @staticmethod
    def _restore_signal_handlers(old: dict[int, Any]) -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    def _should_stop(self) -> bool:
        """Agree across ranks (every ``log_every`` steps under torchrun, to avoid a collective per step)."""
        if not self.dist.enabled:
            return self.stop_signal is not None
        if self.step % self.cfg.log_every:
            return False
        flag = torch.tensor([1.0 if self.stop_signal is not None else 0.0], device=self.device)
        wwdist.all_reduce_sum(flag)
        return bool(flag.item() > 0)

    def _progress_bar(self) -> Any:
        if not self.is_main:
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=self.stage.name,
            unit="step",
            dynamic_ncols=True,
            disable=os.environ.get("WEAKWATER_NO_PROGRESS") == "1",
        )

    def _open_tracker(self) -> Tracker:
        kind = self.cfg.tracker if self.is_main else "none"
        try:
            return Tracker(kind, self.out, self.out.name, to_dict(self.cfg))
        except ImportError as e:
            raise ConfigError(f"--tracker {kind}: {e.name} is not installed (pip install 'weakwater[tracking]')") from e
