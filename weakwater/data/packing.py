"""Lay variable-length training samples into rows: one per row (padded) or several per row (packed).

Chat samples (SFT, distillation, preference pairs) vary a lot in length; right-padding each to the
longest in its micro-batch wastes the padding's compute. Packing puts the same samples back to back
in rows of ``capacity`` tokens (first-fit decreasing), with

- ``segment_ids``: the sample each token comes from (its index in the micro-batch; -1 = padding),
  from which the model builds a block-diagonal causal mask, so samples never see each other;
- ``position_ids`` restarting at 0 for each sample, so RoPE gives every sample the positions it
  would have alone.

The micro-batch still holds the same samples, so the loss and its gradient are those of the padded
batch (checked in the tests); only the wasted slots go away. Per-sample quantities (a DPO answer's
log-probability) are sums over a segment: :func:`weakwater.model.loglik.per_sample_sum`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Sample indices grouped into rows of total length <= ``capacity``; longest samples placed first.

    Deterministic (ties keep index order), so a resumed run packs its batches exactly as before.
    """
    if any(n > capacity for n in lengths):
        raise ValueError(f"a sample of {max(lengths)} tokens does not fit a row of {capacity}")
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def lay_out(
    samples: Sequence[dict[str, torch.Tensor]], fill: dict[str, float | int], capacity: int = 0
) -> dict[str, torch.Tensor]:
    """Rows of the per-token fields in ``samples`` (each a dict of equal-length 1-D tensors).

    ``capacity`` 0: one sample per row, right-padded with ``fill[key]`` to the longest sample.
    ``capacity`` > 0: samples packed into rows of at most that many tokens; adds ``segment_ids``
    and ``position_ids``. Either way rows are as wide as their longest content, no wider.
    """
    if not samples:
        raise ValueError("empty batch")
    lengths = [len(next(iter(s.values()))) for s in samples]
    groups = first_fit_decreasing(lengths, capacity) if capacity else [[i] for i in range(len(samples))]
    width = max(sum(lengths[i] for i in g) for g in groups)
    out = {key: torch.full((len(groups), width), value, dtype=samples[0][key].dtype) for key, value in fill.items()}
    if capacity:
        out["segment_ids"] = torch.full((len(groups), width), -1, dtype=torch.long)
        out["position_ids"] = torch.zeros((len(groups), width), dtype=torch.long)
    for row, group in enumerate(groups):
        col = 0
        for i in group:
            n = lengths[i]
            for key in fill:
                out[key][row, col : col + n] = samples[i][key]
            if capacity:
                out["segment_ids"][row, col : col + n] = i
                out["position_ids"][row, col : col + n] = torch.arange(n)
            col += n
    return out


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The packing keys of a batch as model keyword arguments (empty for a padded batch)."""
    return {k: batch[k] for k in ("segment_ids", "position_ids") if k in batch}
