"""Run one tiny pretraining job from the command line (used by the subprocess/torchrun tests).

``python tiny_run.py DATA OUT key=value ...`` where keys are TrainConfig fields (values JSON-parsed).
Exit code 130 when the run was interrupted by SIGINT/SIGTERM (a checkpoint was written).

Test hooks live here, never in the package (environment variables of this script):
``TINY_STEP_PAUSE=SECONDS`` sleeps after every training micro-batch (widens the window a kill can land
in); ``TINY_SAVE_PAUSE=SECONDS`` sleeps inside every checkpoint write, once before any file is written
and once after all are, before the checkpoint is sealed; ``TINY_SAMPLE_LOG=FILE`` appends one line per
training micro-batch: the rank and the dataset indices it trained on.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from weakwater.train.checkpoint import CheckpointManager
from weakwater.train.config import TrainConfig
from weakwater.train.stages.pretrain import PretrainStage
from weakwater.train.trainer import Trainer

TINY_MODEL = {"vocab_size": 64, "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64}


def build_config(data: str, out: str, pairs: list[str]) -> TrainConfig:
    fields = dict(data=data, out=out, batch_size=8, seq_len=32, lr=3e-3, warmup_steps=5, log_every=5)
    fields["model"] = dict(TINY_MODEL)
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            fields[key] = json.loads(raw)
        except json.JSONDecodeError:
            fields[key] = raw
    return TrainConfig(**fields)


class Indexed:
    """The training windows, each item tagged with its index (for the sample log)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return i, self.dataset[i]


class TinyStage(PretrainStage):
    """Pretraining plus the hooks above."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        self.step_pause = float(os.environ.get("TINY_STEP_PAUSE", "0"))
        self.save_pause = float(os.environ.get("TINY_SAVE_PAUSE", "0"))
        self.sample_log = os.environ.get("TINY_SAMPLE_LOG")
        self.rank = int(os.environ.get("RANK", "0"))

    def datasets(self):
        train, val = super().datasets()
        return (Indexed(train) if self.sample_log else train), val

    def collate(self, samples):
        if samples and isinstance(samples[0], tuple):  # a training batch (validation items are plain)
            with open(self.sample_log, "a") as f:
                f.write(f"{self.rank} {','.join(str(i) for i, _ in samples)}\n")
            samples = [window for _, window in samples]
        return super().collate(samples)

    def loss(self, model, batch, *, train):
        out = super().loss(model, batch, train=train)
        if train and self.step_pause:
            time.sleep(self.step_pause)
        return out

    def state_dict(self):
        """Called at the start of every checkpoint write (the temporary directory exists, holds nothing)."""
        if self.save_pause:
            time.sleep(self.save_pause)
        return {}

    def load_state_dict(self, state) -> None:
        pass


def pause_before_sealing(seconds: float) -> None:
    """Every file of the checkpoint written, manifest and rename still to come."""
    commit = CheckpointManager.commit

    def slow_commit(self, tmp, step):
        time.sleep(seconds)
        return commit(self, tmp, step)

    CheckpointManager.commit = slow_commit


def main() -> int:
    torch.set_num_threads(1)
    data, out, *pairs = sys.argv[1:]
    cfg = build_config(data, out, pairs)
    stage = TinyStage(cfg)
    if stage.save_pause:
        pause_before_sealing(stage.save_pause)
    trainer = Trainer(cfg, stage)
    trainer.fit()
    return 130 if trainer.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
