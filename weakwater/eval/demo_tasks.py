"""The demo's held-out measurements beyond the suite's generic tasks, kept with the rest of evaluation.

``weakwater demo`` scores every stage with these and with :mod:`weakwater.eval.tasks` (held-out exact match,
DPO pair preferences) and :mod:`weakwater.eval.repetition`: the demo itself
has no scoring code, so its report card and ``weakwater eval ...`` can never disagree.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weakwater.answers import is_correct
from weakwater.eval.ppl import score_windows, windows
from weakwater.eval.tasks import generate_answers, generate_replies, load_eval


@torch.no_grad()
def language_model_metrics(model: torch.nn.Module, shard_dir: Path, tokenizer: Any, seq_len: int) -> dict[str, float]:
    """Validation loss and bits per byte of the model and of a unigram baseline fitted on the train split."""
    from weakwater.data.pretrain import read_meta

    meta = read_meta(shard_dir)
    dtype = np.dtype(meta["dtype"])

    def tokens(split: str) -> np.ndarray:
        return np.concatenate([np.fromfile(shard_dir / f, dtype=dtype) for f in meta["splits"][split]["files"]])

    train, val = tokens("train").astype(np.int64), tokens("val").astype(np.int64)
    counts = np.bincount(train, minlength=meta["vocab_size"]).astype(np.float64) + 1.0  # add-one smoothing
    unigram_nats = float(-np.log(counts[val[1:]] / counts.sum()).sum())
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    pieces = list(windows(val.tolist(), seq_len))  # the scoring `eval ppl` / the suite's bpb task use
    nats = sum(score_windows(model, pieces[i : i + 8], device) for i in range(0, len(pieces), 8))
    n = len(val) - 1
    n_bytes = len(tokenizer.decode(val.tolist(), skip_special_tokens=True).encode("utf-8"))
    return {
        "val_loss": nats / n,
        "bits_per_byte": nats / math.log(2) / n_bytes,
        "unigram_loss": unigram_nats / (len(val) - 1),
        "unigram_bits_per_byte": unigram_nats / math.log(2) / n_bytes,
        "val_tokens": n,
    }


def behaviour_rate(
    model: torch.nn.Module, tokenizer: Any, eval_file: Path, limit: int | None, samples: int = 16
) -> dict[str, float]:
    """The behaviour the DPO pairs target, on held-out prompts: the share of greedy replies that are correct
    *and* concise, and the share of ``samples`` replies per prompt sampled at temperature 1 that ramble.

    Greedy decoding shows only a model's most likely reply, so a habit learnt from 15% of the SFT answers
    rarely surfaces there; sampling from the model's own distribution shows how often it is still there.
    """
    from weakwater.data.synth.tasks import is_concise, is_ramble
    from weakwater.eval.repetition import repetition_metrics

    rows = load_eval(eval_file)[:limit]
    replies = generate_answers(model, tokenizer, [r["messages"] for r in rows], max_new_tokens=64)
    good = [is_correct(g, r["answer"]) and is_concise(g, r["answer"]) for r, g in zip(rows, replies)]
    concise = [is_concise(g, r["answer"]) for r, g in zip(rows, replies)]
    replies = generate_replies(
        model, tokenizer, [r["messages"] for r in rows for _ in range(samples)], max_new_tokens=64,
        batch_size=64, temperature=1.0,
    )  # fmt: skip
    sampled = [r.text for r in replies]
    return {
        "rate": sum(good) / len(rows),
        "concise": sum(concise) / len(rows),
        "ramble_sampled": sum(map(is_ramble, sampled)) / len(sampled),
        "repetition_sampled": repetition_metrics(replies),  # the suite's repetition metrics, same replies
        "samples": len(sampled),
        "samples_per_prompt": samples,
    }


def domain_probe(model: torch.nn.Module, tokenizer: Any, data_dir: Path) -> dict[str, float]:
    """What the LoRA domain score means: the share of creatures whose held-out attribute the model states when
    asked to describe the creature (it learnt the fact), and the score of guessing a value of the right kind.

    The held-out questions need both: knowing the fact and answering a question it was never asked about it.
    """
    from weakwater.data.synth.tasks import DESCRIBE_PROMPTS
    from weakwater.data.synth.world import COLOURS, FOODS, LEG_COUNTS, REGIONS

    world = json.loads((data_dir / "world.json").read_text(encoding="utf-8"))
    kinds = {"colour": len(COLOURS), "legs": len(LEG_COUNTS), "food": len(FOODS), "region": len(REGIONS)}
    prompts, expected = [], []
    for c in world["creatures"]:
        attr = c["heldout_attribute"]
        for lang, template in (("en", DESCRIBE_PROMPTS["en"][1]), ("zh", DESCRIBE_PROMPTS["zh"][1])):
            prompts.append([{"role": "user", "content": template.format(n=c["name"][lang])}])
            legs = f"{c['legs']} legs" if lang == "en" else f"{c['legs']}条腿"
            expected.append(legs if attr == "legs" else c[attr][lang])
    replies = generate_answers(model, tokenizer, prompts, max_new_tokens=100)
    return {
        "recall": sum(e in r for e, r in zip(expected, replies)) / len(prompts),
        "chance": sum(1 / kinds[c["heldout_attribute"]] for c in world["creatures"]) / len(world["creatures"]),
    }
