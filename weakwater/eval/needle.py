"""Needle in a haystack: can the model read back a pass key hidden at any depth of a long prompt?

A user turn holds filler sentences with the needle ("The pass key is 48213. Remember it.", or its Chinese
twin) inserted at a depth of 0-100% of the filler, then asks for the key. The reply is
started for the model ("The pass key is " / "通行码是") and the key is scored by teacher forcing: a trial
passes when every key token is the model's most likely next token, which is exactly what greedy decoding
would write. One forward pass per trial, so prompts may run past the model's context (``max_seq_len``) to show
what happens there: the model's own RoPE (with any linear/YaRN scaling it was trained with) is used as is.

Lengths are prompt tokens (chat markup included); half the trials are English, half Chinese.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# The wording, filler and key stream are shared with the demo's long-context training rows (one home).
from weakwater.data.synth.longctx import FILLER, NEEDLE, QUESTION, REPLY, draw_key, trial_rng

DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
LENGTH_FRACTIONS = (0.25, 0.5, 0.75, 1.0, 1.5)  # of the longest context among the models compared


@dataclass(frozen=True)
class Trial:
    messages: list[dict[str, str]]  # the user turn (what a chat SFT example holds)
    reply_prefix: str
    key: str
    lang: str


def make_trial(rng: random.Random, tokenizer: Any, length: int, depth: float, lang: str, digits: int = 5) -> Trial:
    """A prompt of about ``length`` tokens (whole filler sentences) with the key at ``depth`` of the filler."""
    key = draw_key(rng, digits)
    sep = " " if lang == "en" else ""
    sentences = FILLER[lang]

    def build(n: int) -> list[dict[str, str]]:
        filler = [sentences[i % len(sentences)] for i in range(n)]
        at = round(depth * n)
        body = sep.join([*filler[:at], NEEDLE[lang].format(k=key), *filler[at:]])
        return [{"role": "user", "content": f"{body}\n{QUESTION[lang]}"}]

    def size(n: int) -> int:
        return len(prompt_ids(tokenizer, build(n), REPLY[lang]))

    base = size(0)
    per_sentence = max(1.0, (size(20) - base) / 20)
    n = max(0, round((length - base) / per_sentence))
    while n > 0 and size(n) > length:  # the estimate is close; trim to stay within the length
        n -= 1
    return Trial(build(n), REPLY[lang], key, lang)


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]], reply_prefix: str) -> list[int]:
    return tokenizer.encode(tokenizer.render_chat(messages, add_generation_prompt=True) + reply_prefix)


def answer_ids(tokenizer: Any, trial: Trial) -> tuple[list[int], int]:
    """Token ids of prompt + started reply + key, and where the key's tokens start."""
    text = tokenizer.render_chat(trial.messages, add_generation_prompt=True) + trial.reply_prefix
    prefix, full = tokenizer.encode(text), tokenizer.encode(text + trial.key)
    if full[: len(prefix)] != prefix:  # the key merged with the prefix's last token: keep them apart
        full = prefix + tokenizer.encode(trial.key)
    return full, len(prefix)


@torch.no_grad()
def score_trials(model: torch.nn.Module, tokenizer: Any, trials: list[Trial], batch_size: int = 8) -> list[bool]:
    """Whether greedy decoding would write each trial's key (all key tokens are the argmax, teacher-forced)."""
    device = next(model.parameters()).device
    model.eval()
    encoded = [answer_ids(tokenizer, t) for t in trials]
    out: list[bool] = []
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        width = max(len(ids) for ids, _ in batch) - 1
        inputs = torch.zeros(len(batch), width, dtype=torch.long)
        for row, (ids, _) in enumerate(batch):
            inputs[row, : len(ids) - 1] = torch.tensor(ids[:-1])  # right padding: earlier positions unaffected
        logits = model(inputs.to(device))
        for row, (ids, key_at) in enumerate(batch):
            predicted = logits[row, key_at - 1 : len(ids) - 1].argmax(-1).tolist()
            out.append(predicted == ids[key_at:])
    return out


KEY_ROOM = 8  # tokens after the prompt for the key: a prompt as long as the context would push its key beyond


def default_lengths(context: int) -> list[int]:
    """Prompt lengths at ``LENGTH_FRACTIONS`` of ``context``; the full-context one leaves ``KEY_ROOM`` for the key."""
    return sorted({max(32, round(f * context) - (KEY_ROOM if f == 1.0 else 0)) for f in LENGTH_FRACTIONS})


def evaluate_needle(
    model: torch.nn.Module,
    tokenizer: Any,
    lengths: list[int] | None = None,
    depths: tuple[float, ...] = DEPTHS,
    trials: int = 4,
    seed: int = 0,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Accuracy per (depth, length) cell over ``trials`` keys (alternating English and Chinese), with the
    overall accuracy within the model's context and beyond it."""
    t0 = time.perf_counter()
    context = model.config.max_seq_len
    lengths = lengths or default_lengths(context)
    grid: list[list[float]] = []
    cells: list[tuple[int, bool]] = []
    actual: dict[int, list[int]] = {}
    for d_i, depth in enumerate(depths):
        row = []
        for length in lengths:
            rng = trial_rng(seed, d_i, length)
            batch = [make_trial(rng, tokenizer, length, depth, ("en", "zh")[i % 2]) for i in range(trials)]
            actual.setdefault(length, []).extend(len(answer_ids(tokenizer, t)[0]) for t in batch)
            ok = score_trials(model, tokenizer, batch, batch_size)
            row.append(sum(ok) / len(ok))
            cells += [(length, o) for o in ok]
        grid.append(row)
    within = [o for length, o in cells if length <= context]
    beyond = [o for length, o in cells if length > context]
    return {
        "context": context,
        "rope_scaling": model.config.rope_scaling.__dict__ if model.config.rope_scaling else None,
        "lengths": lengths,
        "mean_tokens": {str(k): sum(v) / len(v) for k, v in actual.items()},
        "depths": list(depths),
        "trials": trials,
        "accuracy": grid,  # [depth][length]
        "overall": sum(o for _, o in cells) / len(cells),
        "within_context": sum(within) / len(within) if within else None,
        "beyond_context": sum(beyond) / len(beyond) if beyond else None,
        "time_s": round(time.perf_counter() - t0, 2),
    }


def plot_heatmaps(results: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """One depth x length accuracy heatmap per model, side by side; a dashed line marks each model's context."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names) + 0.8, 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        r = results[name]
        grid = torch.tensor(r["accuracy"]).numpy()
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(len(r["lengths"])), [str(x) for x in r["lengths"]])
        ax.set_yticks(range(len(r["depths"])), [f"{round(100 * d)}%" for d in r["depths"]])
        ax.set_xlabel("prompt tokens")
        if ax is axes[0][0]:
            ax.set_ylabel("needle depth")
        ax.set_title(f"{name}\n(context {r['context']})", fontsize=9)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                ax.text(j, i, f"{100 * grid[i, j]:.0f}", ha="center", va="center", fontsize=8)
        inside = [j for j, length in enumerate(r["lengths"]) if length <= r["context"]]
        if inside and len(inside) < len(r["lengths"]):
            ax.axvline(max(inside) + 0.5, color="black", linestyle="--", linewidth=1)
    fig.colorbar(im, ax=axes[0].tolist(), label="pass key read back (%)", shrink=0.8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
