"""Run one tiny RL job from the command line (the torchrun test): ``python rl_run.py MODEL_DIR PROMPTS OUT k=v ...``."""

from __future__ import annotations

import json
import sys

import torch

from weakwater.tokenizer import load_tokenizer
from weakwater.train.stages.rl import RLConfig, RLStage
from weakwater.train.trainer import Trainer

# A user reward (TRL convention) that differs between samples of a random model: the share of tokens 100-149.
REWARD = "tests.train.rl_run:band"


def band(prompts, completions, completion_ids, **kwargs):
    return [sum(100 <= t < 150 for t in ids) / max(1, len(ids)) for ids in completion_ids]


def main() -> int:
    torch.set_num_threads(1)
    model_dir, prompts, out, *pairs = sys.argv[1:]
    fields = dict(data=prompts, init=model_dir, out=out, device="cpu", group_size=4, max_new_tokens=6,
                  max_prompt_len=32, lr=1e-3, log_every=1, eval_every=0, save_every=0, plot=False, seed=3,
                  beta=0.05, ppo_epochs=2, reward=[REWARD])  # fmt: skip
    fields.update({k: json.loads(v) for k, _, v in (p.partition("=") for p in pairs)})
    cfg = RLConfig(**fields)
    cfg.validate()
    tok = load_tokenizer(model_dir)
    trainer = Trainer(cfg, RLStage(cfg, tok), tokenizer=tok)
    trainer.fit()
    return 130 if trainer.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
