"""Rollouts: G sampled completions per prompt from the live policy, with the project's KV-cache engine,
packed into the (N, T) tensors a loss needs.

Reproducibility without RNG state: each completion gets its own sampling seed, a hash of (run seed, rollout
number, the prompt's dataset index, its sample number). So a completion does not depend on which other
prompts share its batch or on which rank generates it (a 2-process run samples what a 1-process run
samples), and a resumed run needs no saved generator to sample exactly what the uninterrupted one did.

The update packs the sequences into rows (``pack(..., capacity)``), as the supervised stages do: completions
vary in length, and the padding of a right-padded batch is compute spent on nothing.

Generation reads the model's own weights (no second model). On the fast path (plain linear layers, i.e. no
LoRA wrappers) the engine fuses q/k/v and gate/up into temporary concatenated copies for the duration of one
rollout; ``fast=False`` decodes with the training forward and no extra memory at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from weakwater.data.packing import lay_out
from weakwater.infer.fast import FastDecoder, supports_fast_path
from weakwater.infer.generate import BatchDecoder
from weakwater.infer.sampling import SamplingParams
from weakwater.model.llama import Transformer
from weakwater.model.loglik import IGNORE_INDEX


def sample_seed(seed: int, *keys: int) -> int:
    """A 63-bit sampling seed determined by ``seed`` and the integer ``keys`` (counter-based)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, *(int(k) for k in keys)]).generate_state(2, np.uint32)
    return ((int(state[0]) << 32) | int(state[1])) >> 1


@dataclass
class Completions:
    """N = prompts x G completions, grouped: rows ``[i*G, (i+1)*G)`` belong to prompt i."""

    prompt_ids: list[list[int]]  # repeated per completion
    completion_ids: list[list[int]]  # includes the stop token when the completion ended with it
    finished: list[bool]  # ended with the stop token (False: hit the token limit)


@torch.no_grad()
def sample_completions(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    seeds: Sequence[int],
    params: SamplingParams,
    stop_id: int,
    group_size: int = 1,
    batch_rows: int = 0,
    fast: bool = True,
) -> Completions:
    """``group_size`` completions of every prompt, completion j of prompt i sampled with ``seeds[i*G + j]``.

    ``params`` gives temperature, top-p/k and max_new_tokens (its seed and stop tokens are replaced);
    ``batch_rows`` caps the sequences decoded together (0: all at once).
    """
    rows = [list(p) for p in prompts for _ in range(group_size)]
    if len(seeds) != len(rows):
        raise ValueError(f"need one seed per completion: {len(rows)} completions, {len(seeds)} seeds")
    forward = FastDecoder(model) if fast and supports_fast_path(model) else None
    per_row = [replace(params, seed=int(s), stop_token_ids=(stop_id,), stop=()) for s in seeds]
    out: list[list[int]] = []
    finished: list[bool] = []
    step = batch_rows if batch_rows > 0 else len(rows)
    for start in range(0, len(rows), step):
        dec = BatchDecoder(model, rows[start : start + step], per_row[start : start + step], forward=forward)
        while not dec.done:
            dec.step()
        for r in sorted(dec.finished, key=lambda r: r.index):
            stopped = r.finish_reason == "stop"
            out.append(r.tokens + [stop_id] if stopped else list(r.tokens))
            finished.append(stopped)
    return Completions(rows, out, finished)


def pack(
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    pad_id: int,
    capacity: int = 0,
) -> dict[str, torch.Tensor]:
    """The update's tensors: ``input_ids`` and next-token ``labels`` (the completion tokens are the labels,
    everything else is ``IGNORE_INDEX``), ``mask`` marking the completion labels.

    ``capacity`` 0: one sequence per row, right-padded. ``capacity`` > 0: sequences packed into rows of at
    most that many tokens (:func:`weakwater.data.packing.lay_out`), with ``segment_ids`` (the sequence's
    index) and ``position_ids``; pass them to the model with ``model_inputs``.
    """
    samples = []
    for p, c in zip(prompt_ids, completion_ids, strict=True):
        seq = torch.tensor([*p, *c], dtype=torch.long)
        labels = seq[1:].clone()
        labels[: len(p) - 1] = IGNORE_INDEX  # position len(p)-1 predicts the first completion token
        samples.append({"input_ids": seq[:-1], "labels": labels})
    out = lay_out(samples, {"input_ids": pad_id, "labels": IGNORE_INDEX}, capacity)
    out["mask"] = out["labels"] != IGNORE_INDEX
    return out
