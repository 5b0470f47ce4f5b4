"""``TrainConfig``: every knob of a training run, shared by all stages.

Stage configs (SFT, distillation, DPO) subclass it and add their own fields; every field becomes a
``--kebab-case`` flag through :func:`weakwater.config.add_arguments`. ``validate`` runs before any
data or model is touched so an impossible run fails in a second, saying what to change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from weakwater.device import DEVICE_HELP, DTYPES, valid_device_name
from weakwater.train.optim import OPTIMIZERS, SCHEDULES

TRACKERS = ("none", "tensorboard", "wandb", "swanlab")
# Model fields a run may change when it starts from ``--init``: they do not change any weight's shape.
INIT_OVERRIDABLE = ("dropout", "max_seq_len", "rope_scaling", "rope_theta")


MIN_LR_HELP = "the schedule's final learning rate as a fraction of --lr"
SCHEDULE_HELP = "wsd (warmup, constant, linear decay over the last --decay-frac) or cosine (decay to --min-lr-ratio)"
OPTIMIZER_HELP = "muon (Muon on attention/MLP matrices, AdamW on embeddings and norms; not with --fsdp), or adamw"


class ConfigError(ValueError):
    """An impossible or inconsistent run configuration; the message says which setting to change."""


@dataclass
class FineTuneRecipe:
    """Optimizer and schedule of the stages that start from a trained model (chat stages, RL): AdamW with cosine
    decay to 10 %. A stage config lists this before ``TrainConfig`` so these defaults replace pretraining's
    Muon + WSD, which was measured for pretraining from scratch only."""

    min_lr_ratio: float = field(default=0.1, metadata={"help": MIN_LR_HELP})
    schedule: str = field(default="cosine", metadata={"help": SCHEDULE_HELP})
    optimizer: str = field(default="adamw", metadata={"help": OPTIMIZER_HELP})


@dataclass
class TrainConfig:
    # Stages that read JSONL directly (SFT, distillation, DPO) set this to skip the token-shard check.
    data_is_jsonl: ClassVar[bool] = False
    data: str = field(default="", metadata={"help": "training data: a directory made by `weakwater prepare`"})
    val_data: str | None = field(
        default=None, metadata={"help": "validation data directory; unset: the val split of --data"}
    )
    out: str = field(default="runs/pretrain", metadata={"help": "run directory (checkpoints, metrics, final model)"})
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "tokenizer directory; unset: the one in --init, else the one --data was prepared with"},
    )
    preset: str = field(
        default="tiny",
        metadata={"help": "size of a new model: tiny, 26m or 104m (with --init the saved model's shape is used)"},
    )
    init: str | None = field(default=None, metadata={"help": "saved model directory to start from"})
    max_steps: int = field(default=0, metadata={"help": "optimizer steps to run (0: derive from --epochs)"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training data when --max-steps is 0"})
    resume: bool = field(default=False, metadata={"help": "continue the run in --out from its latest checkpoint"})
    allow_config_change: bool = field(
        default=False,
        metadata={
            "help": "with --resume: continue even though settings that change the run differ from the checkpoint's"
        },
    )
    device: str = field(default="auto", metadata={"help": DEVICE_HELP})
    seed: int = field(default=1337, metadata={"help": "seed for init, data order and dropout"})
    batch_size: int = field(default=16, metadata={"help": "sequences per micro-batch per device"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    seq_len: int = field(default=256, metadata={"help": "tokens per training sequence"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    # Pretraining's recipe is Muon + WSD decaying to 0: on the demo it ends at 0.254 bits/byte against AdamW +
    # cosine's 0.303, and the SFT after it scores as well or better (docs/benchmarks.md, "Time to target").
    min_lr_ratio: float = field(default=0.0, metadata={"help": MIN_LR_HELP})
    warmup_steps: int = field(default=50, metadata={"help": "linear warmup steps"})
    schedule: str = field(default="wsd", metadata={"help": SCHEDULE_HELP})
    decay_frac: float = field(default=0.2, metadata={"help": "wsd: share of the steps spent decaying"})
    optimizer: str = field(default="muon", metadata={"help": OPTIMIZER_HELP})
    weight_decay: float = field(
        default=0.1, metadata={"help": "AdamW weight decay (matrices only; norms and embeddings get none)"}
    )
    beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    beta2: float = field(default=0.95, metadata={"help": "AdamW beta2"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the global gradient norm to this (0: off)"})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on CUDA if supported, else fp16; fp32 on CPU)"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    eval_every: int = field(default=200, metadata={"help": "validate every N steps (0: only at the end)"})
    eval_batches: int = field(default=20, metadata={"help": "validation micro-batches per evaluation"})
    save_every: int = field(default=200, metadata={"help": "checkpoint every N steps (0: only at the end)"})
    keep_last: int = field(default=3, metadata={"help": "checkpoints to keep (the best model is kept apart)"})
    log_every: int = field(default=10, metadata={"help": "read the loss and write metrics every N steps"})
    plot: bool = field(default=True, metadata={"help": "write loss.png (loss and lr curves) at the end"})
    tracker: str = field(
        default="none", metadata={"help": "none, tensorboard, wandb or swanlab (all offline, written under --out)"}
    )
    lora_rank: int = field(default=0, metadata={"help": "train LoRA adapters of this rank instead of all weights"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scale numerator (scale = alpha / rank)"})
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        metadata={"help": "comma-separated module names that get LoRA adapters"},
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input"})
    max_bad_steps: int = field(
        default=5, metadata={"help": "consecutive NaN/Inf steps before rolling back to the last checkpoint"}
    )
    spike_factor: float = field(
        default=3.0, metadata={"help": "log a loss spike above this x the running mean (0: no spike detection)"}
    )
    fsdp: bool = field(default=False, metadata={"help": "shard the model with FSDP2 under torchrun"})
    model: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "ModelConfig overrides, e.g. dim=256,n_layers=6 ([model] table in --config)"},
    )

    def model_overrides(self) -> dict[str, Any]:
        """The ModelConfig overrides the run builds its model with: ``[model]`` here; stages that derive
        more (SFT's context length from the ``--init`` model) add them. An explicit step, run once by
        the trainer when it builds the model, so validation never reads files or rewrites fields."""
        return dict(self.model)

    def validate(self) -> None:
        """Check the settings that need no files; raise :class:`ConfigError` listing every problem."""
        problems: list[str] = []

        def need(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        data_help = next(f.metadata["help"] for f in dataclasses.fields(self) if f.name == "data")
        need(bool(self.data), f"--data is required ({data_help})")
        need(bool(self.out), "--out is required")
        need(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        need(self.grad_accum >= 1, f"--grad-accum must be >= 1, got {self.grad_accum}")
        need(self.seq_len >= 2, f"--seq-len must be >= 2, got {self.seq_len}")
        need(self.max_steps >= 0, f"--max-steps must be >= 0, got {self.max_steps}")
        need(self.max_steps > 0 or self.epochs > 0, f"--epochs must be > 0 when --max-steps is 0, got {self.epochs}")
        need(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        need(0.0 <= self.min_lr_ratio <= 1.0, f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        need(self.warmup_steps >= 0, f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        need(self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        need(0.0 < self.decay_frac <= 1.0, f"--decay-frac must be in (0, 1], got {self.decay_frac}")
        need(
            self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
        )
        need(
            not (self.fsdp and self.optimizer == "muon"),
            "--optimizer muon needs whole matrices: use DDP (drop --fsdp) or --optimizer adamw",
        )
        need(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "--beta1 and --beta2 must be in [0, 1)")
        need(self.grad_clip >= 0, f"--grad-clip must be >= 0 (0 turns clipping off), got {self.grad_clip}")
        need(self.dtype in DTYPES, f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        need(self.tracker in TRACKERS, f"--tracker must be one of {', '.join(TRACKERS)}, got {self.tracker!r}")
        need(self.eval_every >= 0, f"--eval-every must be >= 0, got {self.eval_every}")
        need(self.eval_batches >= 1, f"--eval-batches must be >= 1, got {self.eval_batches}")
        need(self.save_every >= 0, f"--save-every must be >= 0, got {self.save_every}")
        need(self.keep_last >= 1, f"--keep-last must be >= 1, got {self.keep_last}")
        need(self.log_every >= 1, f"--log-every must be >= 1, got {self.log_every}")
        need(self.lora_rank >= 0, f"--lora-rank must be >= 0, got {self.lora_rank}")
        need(self.max_bad_steps >= 1, f"--max-bad-steps must be >= 1, got {self.max_bad_steps}")
        need(
            self.spike_factor == 0 or self.spike_factor > 1, f"--spike-factor must be 0 or > 1, got {self.spike_factor}"
        )
        need(valid_device_name(self.device), f"--device must be {DEVICE_HELP}, got {self.device!r}")
        if self.data and not self.data_is_jsonl and Path(self.data).suffix in (".jsonl", ".json"):
            problems.append(
                f"--data {self.data} is a JSONL file; tokenize it first with "
                f"`weakwater prepare --data {self.data} --tokenizer DIR --out DIR` and pass that directory"
            )
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))
