"""The one training engine. Stages supply data, batches and a loss (:mod:`weakwater.train.stage`);
everything else lives here.

Read top to bottom: ``Trainer.__init__`` resolves device, precision, tokenizer, model, data and
optimizer (through :mod:`weakwater.train.build`) and validates them all before any step runs; ``fit`` is
the loop; ``_train_step`` is one optimizer step over ``grad_accum`` micro-batches; then evaluation, the
run state that checkpoints hold (``state_dict``; writing, resume and rollback are
:mod:`weakwater.train.checkpoint`'s) and the fault handling (signals, NaN/Inf steps, loss spikes).

Design choices worth knowing:

* Losses are sums plus a count (see :class:`weakwater.train.stage.Stage`). Micro-batch gradients are
  accumulated unnormalised and divided once by the global count (all micro-batches, all ranks), so
  ``grad_accum`` x ``batch_size`` and ``world_size`` x ``batch_size`` give the gradient of one big batch.
* The optimizer (AdamW, or Muon + AdamW) and the schedule (cosine or warmup-stable-decay) are chosen in
  :mod:`weakwater.train.optim`; weight decay applies to the attention and MLP matrices only.
* The loss is read on the host every ``log_every`` steps only. One scalar *is* read every step: the
  "are loss and gradients finite" flag that decides whether the optimizer may step (GradScaler does
  the same); skipping a poisoned update cannot be decided later. Under FSDP the gradient scale is
  also read (DTensor gradients take a Python scalar). Stage metrics stay on the device too.
* Checkpoints carry the full state (model, optimizer, schedule, scaler, RNG streams of every rank, data
  position, stage state), so a resumed run on CPU in fp32 is bitwise identical to an uninterrupted one,
  and a run resumes on another process count at the same global batch.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from weakwater import console
from weakwater.config import save_resolved, to_dict
from weakwater.data.loader import BatchLoader
from weakwater.device import pick_device, pick_dtype
from weakwater.model.config import ModelConfig
from weakwater.model.io import save_model
from weakwater.train import build, checkpoint
from weakwater.train import distributed as wwdist
from weakwater.train.checkpoint import CheckpointManager
from weakwater.train.config import ConfigError, TrainConfig
from weakwater.train.optim import lr_factor, optimizers
from weakwater.train.stage import (
    Stage,
    StageContext,
    call_evaluate,
    call_rollout,
    call_setup,
    has_rollout,
    load_stage_state,
    sampling_generator,
    stage_state,
)
from weakwater.train.tracking import MetricsLog, Tracker, open_tracker, plot_curves


def _add_metrics(acc: dict[str, torch.Tensor], metrics: dict[str, Any], device: torch.device) -> None:
    """Sum a micro-batch's stage metrics into ``acc`` without leaving the device.

    A metric is a 0-d tensor (averaged over micro-batches and ranks) or a ``(sum, count)`` pair (a ratio of
    sums, e.g. a per-token mean: the micro-batches' and ranks' sums and counts are added before dividing, so
    it is the global token mean whatever the split). Pairs are kept as 2-element tensors.
    """
    for key, value in metrics.items():
        if isinstance(value, tuple):
            value = torch.stack([torch.as_tensor(v, device=device).detach().float().reshape(()) for v in value])
        elif isinstance(value, torch.Tensor):
            value = value.detach().float()
        else:
            value = torch.tensor(float(value), device=device)
        acc[key] = acc[key] + value if key in acc else value


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

        self.tokenizer = tokenizer if tokenizer is not None else build.load_tokenizer(cfg)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every run
        self.model = model if model is not None else build.build_model(cfg, self.tokenizer)
        self.model_config: ModelConfig = self.model.config
        build.check_model(cfg, self.model_config, self.tokenizer)
        checkpoint.check_run_dir(self)
        self.train_data, self.val_data = stage.datasets()
        build.check_data(cfg, self.train_data, self.model_config, self.tokenizer)
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
        self.forward_model = wwdist.wrap_model(self.model, self.dist, self.device, cfg.fsdp, cfg.compile)
        self.optimizer = build.build_optimizer(self.model, cfg, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype == torch.float16 else None
        self.ctx = StageContext(
            cfg=cfg,
            model=self.model,
            tokenizer=self.tokenizer,
            device=self.device,
            dtype=self.dtype,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            generator=sampling_generator(cfg.seed, self.dist.rank, self.device),
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
        self.metrics = MetricsLog(self.out / "metrics.jsonl")

    # ------------------------------------------------------------------ setup
    # ------------------------------------------------------------------ schedule
    def lr_at(self, step: int) -> float:
        """The schedule's learning rate at ``step`` (see :mod:`weakwater.train.optim`), times the rollback scale."""
        cfg = self.cfg
        factor = lr_factor(step, self.total_steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio, cfg.decay_frac)
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
            resumed_from = checkpoint.resume(self) if cfg.resume else None
            call_setup(self.stage, self.ctx)
            tracker = open_tracker(self.cfg.tracker if self.is_main else "none", self.out, to_dict(self.cfg))
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
                        checkpoint.rollback(self)
                        pending = []
                        if bar is not None:
                            bar.reset_to(self.step)
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
            console.say(f"interrupted at step {self.step}: checkpoint {checkpoint} written; continue with --resume")
        return checkpoint

    def _train_step(self) -> StepResult | None:
        """One optimizer step, or None when it was skipped because the loss or gradients were not finite."""
        cfg = self.cfg
        self.model.train()
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
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
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            totals += torch.stack([loss.detach().float(), count.detach().float()])
            _add_metrics(metrics, extra, self.device)
        # One collective for loss, count and the stage metrics (averaged over micro-batches and ranks).
        totals, extras = wwdist.all_reduce_sums(totals, metrics, cfg.grad_accum * self.dist.world_size)
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
        factor = self.cfg.spike_factor
        if factor and self.loss_ema is not None and self.loss_ema > 0 and loss > factor * self.loss_ema:
            self.counters["spikes"] += 1
            record["spike"] = True
            if self.is_main:
                console.say(f"loss spike at step {self.step}: {loss:.4f} > {factor} x running mean {self.loss_ema:.4f}")
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
            totals, means = wwdist.all_reduce_sums(totals, metrics, batches * self.dist.world_size)
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
            shown = ", ".join(f"{k} {v:.4g}" for k, v in results.items() if k.startswith("val_"))
            if shown:
                best = " (best so far)" if results.get("val_loss", math.inf) < self.best_val else ""
                console.say(f"{self.stage.name} step {self.step}: {shown}{best}")
        val = results.get("val_loss")
        if val is not None and val < self.best_val:
            self.best_val = val
            self._save_model_dir(self.out / "best", {"step": self.step, "val_loss": val})

    # ------------------------------------------------------------------ saving
    def _save_model_dir(self, path: Path, extra: dict[str, Any]) -> None:
        """A plain model directory (``best/``, ``final/``) of the current weights; every rank calls it."""
        plain = build.plain_copy(self.model, self.model_config, self.cfg, self.is_main)
        if plain is not None:
            extra = {"stage": self.stage.name, **extra}
            save_model(plain, path, tokenizer_dir=getattr(self.tokenizer, "dir", None), extra=extra)
        wwdist.barrier()

    def _save_final(self) -> Path:
        final = self.out / "final"
        if self.cfg.lora_rank > 0 and self.is_main:
            from weakwater.model.lora import save_adapter

            save_adapter(self.model, self.out / "adapter")
        best = self.best_val if math.isfinite(self.best_val) else None
        self._save_model_dir(final, {"step": self.step, "best_val_loss": best, "train_config": to_dict(self.cfg)})
        if self.is_main:
            console.say(f"saved final model to {final}")
        return final

    # ------------------------------------------------------------------ state (written by train/checkpoint.py)
    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds: ``model`` and ``optim`` (live tensors; this rank's shards under
        FSDP), ``trainer`` (JSON: run counters, data position, GradScaler, config, model shape) and
        ``rank`` (this process's RNG streams and the stage's state)."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model, optim = get_state_dict(self.model, optimizers(self.optimizer))
        run = {
            "step": self.step,
            "lr_scale": self.lr_scale,
            "best_val": self.best_val if math.isfinite(self.best_val) else None,
            "counters": self.counters,
            "loss_ema": self.loss_ema,
            "tokens_seen": self.tokens_seen,
            "loader": self.loader.state_dict(),
            "world_size": self.dist.world_size,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "stage": self.stage.name,
            "model": self.model_config.to_dict(),
            "config": to_dict(self.cfg),
        }
        rank = {"rng": checkpoint.rng_state(self.ctx.generator, self.device), "stage": stage_state(self.stage)}
        return {"model": model, "optim": optim, "trainer": run, "rank": rank}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_state_dict

        set_state_dict(
            self.model, optimizers(self.optimizer), model_state_dict=state["model"], optim_state_dict=state["optim"]
        )
        run = state["trainer"]
        if self.scaler is not None and run.get("scaler"):
            self.scaler.load_state_dict(run["scaler"])
        self.step = self.ctx.step = run["step"]
        self.lr_scale = run["lr_scale"]
        self.best_val = run["best_val"] if run["best_val"] is not None else math.inf
        self.counters = dict(run["counters"])
        self.loss_ema = run["loss_ema"]
        self.tokens_seen = run["tokens_seen"]
        self.loader.load_state_dict(run["loader"])
        rank = state.get("rank") or {}
        if rank.get("rng") is not None:
            checkpoint.set_rng_state(rank["rng"], self.ctx.generator, self.device)
        load_stage_state(self.stage, rank.get("stage"))

    def save_checkpoint(self) -> Path:
        path = checkpoint.save(self)
        self._saved_step = self.step
        return path

    def warn(self, message: str) -> None:
        console.say(message)
        self.metrics.write({"step": self.step, "event": "warning", "message": message})

    # ------------------------------------------------------------------ signals, progress
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

    def _progress_bar(self) -> console.Progress | None:
        """A bar on a terminal, plain periodic lines in a log or pipe (see :mod:`weakwater.console`)."""
        if not self.is_main:
            return None
        return console.Progress(self.total_steps, self.stage.name, unit="steps", initial=self.step)
