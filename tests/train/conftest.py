"""Tiny token shards so trainer tests need no tokenizer and run in seconds on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

VOCAB = 64


def write_shards(out: Path, train_tokens: int = 40_000, val_tokens: int = 4_000, seed: int = 0) -> Path:
    """A ``weakwater prepare``-format directory holding a learnable stream: a sparse random Markov chain
    (each token has 3 likely successors), so the loss can fall far below ln(VOCAB)."""
    rng = np.random.default_rng(seed)
    successors = rng.integers(0, VOCAB, size=(VOCAB, 3))
    out.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, n in (("train", train_tokens), ("val", val_tokens)):
        tokens = np.empty(n, dtype=np.uint16)
        t = 0
        for i in range(n):
            tokens[i] = t
            t = int(successors[t, rng.integers(0, 3)])
        name = f"{split}_000.bin"
        tokens.tofile(out / name)
        splits[split] = {"files": [name], "tokens": n, "docs": 1}
    meta = {"format": "weakwater-tokens", "version": 1, "dtype": "uint16", "vocab_size": VOCAB, "eos_id": 0}
    meta["splits"] = splits
    (out / "meta.json").write_text(json.dumps(meta))
    return out


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    """No progress bars in test logs; one thread (tiny matmuls only lose from threading on busy CPUs)."""
    import torch

    monkeypatch.setenv("WEAKWATER_NO_PROGRESS", "1")
    torch.set_num_threads(1)


def stop_after(trainer, stop_at: int):
    """Deliver a SIGINT-equivalent (as Ctrl-C would) once ``trainer`` has done ``stop_at`` steps."""
    import signal

    step = trainer._train_step

    def stepping():
        result = step()
        if trainer.step >= stop_at:
            trainer.stop_signal = signal.SIGINT
        return result

    trainer._train_step = stepping
    return trainer


@pytest.fixture
def interrupt_after():
    """:func:`stop_after`, for tests outside this folder's modules."""
    return stop_after
