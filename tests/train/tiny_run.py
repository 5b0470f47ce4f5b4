"""Run one tiny pretraining job from the command line (used by the subprocess/torchrun tests).

``python tiny_run.py DATA OUT key=value ...`` where keys are TrainConfig fields (values JSON-parsed).
Exit code 130 when the run was interrupted by SIGINT/SIGTERM (a checkpoint was written).
"""

from __future__ import annotations

import json
import sys

import torch

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


def main() -> int:
    torch.set_num_threads(1)
    data, out, *pairs = sys.argv[1:]
    cfg = build_config(data, out, pairs)
    trainer = Trainer(cfg, PretrainStage(cfg))
    trainer.fit()
    return 130 if trainer.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
