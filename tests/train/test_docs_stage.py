"""The custom online stage printed in docs/training.md runs as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

from weakwater.tokenizer import load_tokenizer
from weakwater.train.stages.rl import RLConfig
from weakwater.train.trainer import Trainer

DOC = Path(__file__).resolve().parents[2] / "docs" / "training.md"


def test_documented_custom_stage_trains(tmp_path, make_model_dir):
    text = DOC.read_text(encoding="utf-8")
    section = text.split("### A custom online stage", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    model_dir = make_model_dir(tmp_path / "init", init_std=0.02)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say {i}."}) + "\n" for i in range(8)))
    cfg = RLConfig(
        data=str(prompts), init=str(model_dir), out=str(tmp_path / "short"), max_steps=2, batch_size=2,
        max_prompt_len=64, max_new_tokens=32, device="cpu", log_every=1, eval_every=0, save_every=0, plot=False,
        reward=["length"],
    )  # fmt: skip
    tok = load_tokenizer(model_dir)
    trainer = Trainer(cfg, namespace["ShortReplies"](cfg, tok), tokenizer=tok)
    trainer.fit()
    logged = [json.loads(line) for line in (tmp_path / "short" / "metrics.jsonl").read_text().splitlines()]
    assert trainer.step == 2 and any("reply_logp" in r for r in logged)
