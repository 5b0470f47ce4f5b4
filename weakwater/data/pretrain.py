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

from weakwater.data.prepare import META_FILE, TOKENIZER_SUBDIR
from weakwater.jsonl import DataError


def read_meta(shard_dir: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of a prepared token directory (clear error when the directory is not one)."""
    path = Path(shard_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `weakwater prepare --out {shard_dir}` first")
    return json.loads(path.read_text(encoding="utf-8"))


def shard_tokenizer_dir(shard_dir: str | Path) -> Path | None:
    """The tokenizer a token directory was prepared with, found from any working directory.

    ``meta.json`` names it relative to the shard directory (``prepare`` copies it in). Directories
    prepared before that recorded the path as given to ``prepare``, relative to *its* working
    directory: those are tried as written, then against the shard directory. None when ``shard_dir``
    has no meta.json; a ``FileNotFoundError`` naming every place looked at when none exists.
    """
    shard_dir = Path(shard_dir)
    if not (shard_dir / META_FILE).is_file():
        return None
    recorded = read_meta(shard_dir).get("tokenizer", {}).get("dir")
    if not recorded:
        return None
    tried = [shard_dir / recorded] if not Path(recorded).is_absolute() else []
    tried.append(Path(recorded))
    for candidate in tried:
        if (candidate / "tokenizer.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"{shard_dir / META_FILE} names tokenizer {recorded!r}, which is not at "
        f"{' nor '.join(str(p) for p in dict.fromkeys(tried))}: pass --tokenizer DIR (the tokenizer `prepare` used), "
        f"or re-run `weakwater prepare`, which now keeps a copy in {shard_dir / TOKENIZER_SUBDIR}"
    )


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
