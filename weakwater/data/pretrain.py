"""Fixed-length training windows over the token shards written by ``weakwater prepare``.

Documents are already packed back to back with EOS between them, so a window is just a slice: no padding,
no wasted compute. Shards are opened with ``np.memmap``, so a dataset of any size costs almost no RAM and
is shared between DataLoader workers for free.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weakwater.data.jsonl import DataError
from weakwater.data.prepare import META_FILE


def read_meta(shard_dir: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of a prepared token directory (clear error when the directory is not one)."""
    path = Path(shard_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `weakwater prepare --out {shard_dir}` first")
    return json.loads(path.read_text(encoding="utf-8"))


class PackedWindows(torch.utils.data.Dataset):
    """Map-style dataset: ``ds[i]`` is a LongTensor of ``seq_len + 1`` tokens (inputs ``w[:-1]``, targets ``w[1:]``).

    Consecutive windows overlap by one token so that every token (but a shard's first) is a target exactly once.
    Windows never cross shard boundaries; the tail of each shard shorter than a window is not used.
    """

    def __init__(self, shard_dir: str | Path, split: str = "train", seq_len: int = 512):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.dir = Path(shard_dir)
        self.meta = read_meta(self.dir)
        if split not in self.meta["splits"]:
            raise ValueError(f"{self.dir}: no split '{split}' (have {sorted(self.meta['splits'])})")
        self.seq_len = seq_len
        self.vocab_size: int = self.meta["vocab_size"]
        dtype = np.dtype(self.meta["dtype"])
        self.shards = []
        for name in self.meta["splits"][split]["files"]:
            path = self.dir / name
            if path.stat().st_size:
                self.shards.append(np.memmap(path, dtype=dtype, mode="r"))
        counts = [max(0, (len(s) - 1) // seq_len) for s in self.shards]
        self._starts = np.cumsum([0, *counts])
        if self._starts[-1] == 0:
            tokens = sum(len(s) for s in self.shards)
            raise DataError(f"{self.dir}: split '{split}' has {tokens} tokens, fewer than one window of {seq_len + 1}")

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range [0, {len(self)})")
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        start = (index - int(self._starts[shard])) * self.seq_len
        return torch.from_numpy(self.shards[shard][start : start + self.seq_len + 1].astype(np.int64))


def collate_windows(samples: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stack windows into ``input_ids`` and next-token ``labels`` (both ``(B, seq_len)``)."""
    batch = torch.stack(samples)
    return {"input_ids": batch[:, :-1], "labels": batch[:, 1:]}
