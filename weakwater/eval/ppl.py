"""Loss, perplexity and bits-per-byte of a model on a JSONL text file.

Bits-per-byte (total nats / ln 2 / total UTF-8 bytes) does not depend on the tokenizer, so models with
different vocabularies can be compared (nanochat reports the same). Each document is scored after the
``<|endoftext|>`` separator it follows in pretraining; long documents are cut into context-sized windows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from weakwater.console import Progress
from weakwater.data.text import iter_texts
from weakwater.jsonl import DataError, SkipCounter
from weakwater.model.loglik import IGNORE_INDEX, token_logprobs


def _count_lines(path: str | Path) -> int:
    """Lines in the file (the progress total: rows that turn out unusable are still lines)."""
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def windows(ids: list[int], length: int) -> Iterator[tuple[list[int], list[int]]]:
    """(inputs, labels) pairs of at most ``length`` tokens covering every label in ``ids[1:]`` once."""
    for start in range(0, len(ids) - 1, length):
        chunk = ids[start : start + length + 1]
        yield chunk[:-1], chunk[1:]


@torch.no_grad()
def score_windows(model: torch.nn.Module, batch: list[tuple[list[int], list[int]]], device: torch.device) -> float:
    """Summed next-token negative log-likelihood (nats) of a batch of right-padded windows."""
    width = max(len(x) for x, _ in batch)
    inputs = torch.zeros(len(batch), width, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, (x, y) in enumerate(batch):
        inputs[row, : len(x)] = torch.tensor(x)
        labels[row, : len(y)] = torch.tensor(y)
    logits = model(inputs.to(device))  # right padding never affects earlier positions (causal)
    return -token_logprobs(logits, labels.to(device)).sum().item()


def evaluate_ppl(
    model: torch.nn.Module,
    tokenizer: Any,
    path: str | Path,
    field: str = "text",
    max_docs: int | None = None,
    batch_size: int = 8,
    seq_len: int | None = None,
) -> dict[str, Any]:
    """Token-level loss, perplexity and bits-per-byte over the documents of ``path``."""
    model.eval()
    device = next(model.parameters()).device
    seq_len = seq_len or model.config.max_seq_len
    skipped = SkipCounter()
    nats, tokens, n_bytes, docs = 0.0, 0, 0, 0
    pending: list[tuple[list[int], list[int]]] = []
    total = _count_lines(path)
    with Progress(min(total, max_docs) if max_docs is not None else total, "eval ppl", unit="docs") as progress:
        for text in iter_texts([path], field, skipped=skipped):
            if max_docs is not None and docs >= max_docs:
                break
            ids = [tokenizer.eos_id, *tokenizer.encode(text)]
            docs += 1
            tokens += len(ids) - 1
            n_bytes += len(text.encode("utf-8"))
            pending.extend(windows(ids, seq_len))
            while len(pending) >= batch_size:
                nats += score_windows(model, pending[:batch_size], device)
                pending = pending[batch_size:]
            progress.update()
        if pending:
            nats += score_windows(model, pending, device)
    if tokens == 0:
        raise DataError(f"{path}: no documents with text; {skipped.summary()}")
    loss = nats / tokens
    return {
        "documents": docs,
        "tokens": tokens,
        "bytes": n_bytes,
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_byte": nats / math.log(2) / n_bytes,
        "skipped": skipped.as_dict(),
    }
