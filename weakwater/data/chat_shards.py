"""Pre-tokenised chat data: ``weakwater prepare --chat`` writes SFT conversations or DPO pairs as token ids
plus their supervised-token masks, so that no training step renders a template or runs the tokenizer.

Reading a JSONL chat file costs, per sample and per epoch: a seek and ``json.loads``, the chat template,
and the tokenizer, on the training process's own thread (the loader has no worker processes), while the
GPU waits. With shards a sample is two slices of memory-mapped arrays.

Layout of the directory (``--out``)::

    meta.json      kind (sft | dpo), counts, dtype, the source file's sha256, the tokenizer's fingerprint
    ids.bin        every sequence's token ids back to back (uint16 when the vocabulary fits, else uint32)
    mask.bin       one byte per token: 1 = supervised (the same mask the JSONL path computes)
    offsets.npy    int64 (sequences + 1,): sequence j is ids[offsets[j]:offsets[j + 1]]
    tokenizer/     a copy of the tokenizer that made them

An SFT sample is one sequence, a preference pair two (chosen, rejected). Sequences are stored untruncated:
the training window (``--max-seq-len``) and the truncation policy apply when a sample is read, exactly as
for JSONL, so the same shards serve any context length. The sample order is the file's, so a run on the
shards sees the same batches as a run on the JSONL file (and resumes as exactly).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from weakwater.jsonl import DataError

FORMAT = "weakwater-chat-shards"
KINDS = {"sft": 1, "dpo": 2}  # sequences per sample
META_FILE = "meta.json"


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """What decides a conversation's tokens (``Tokenizer.fingerprint``: the tokenizer model + chat template)."""
    if not callable(getattr(tokenizer, "fingerprint", None)):
        raise TypeError(f"{type(tokenizer).__name__} has no fingerprint(): chat shards need weakwater's Tokenizer")
    return tokenizer.fingerprint()


def is_chat_shards(path: str | Path) -> bool:
    meta = Path(path) / META_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def write_chat_shards(
    dataset: Any,
    kind: str,
    tokenizer: Any,
    out: str | Path,
    source: str | Path,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write ``dataset`` (a ChatDataset or PreferenceDataset: its ``sequences(i)``) to ``out``.

    The files are written into ``<out>.partial`` and moved into place at the end, so an interrupted run
    never leaves a directory that looks complete; an existing chat-shards ``out`` is replaced.
    """
    from weakwater.model.io import copy_tokenizer_files, file_sha256

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    out = Path(out)
    if out.exists() and not is_chat_shards(out) and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not a chat-shards directory: choose another --out")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dtype = np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32
    offsets = [0]
    lengths: list[int] = []
    with open(tmp / "ids.bin", "wb") as ids_f, open(tmp / "mask.bin", "wb") as mask_f:
        for i in range(len(dataset)):
            sequences = dataset.sequences(i)
            if len(sequences) != KINDS[kind]:
                raise ValueError(f"sample {i}: {len(sequences)} sequences, a {kind} sample has {KINDS[kind]}")
            for ids, mask in sequences:
                ids_f.write(np.asarray(ids, dtype=dtype).tobytes())
                mask_f.write(np.asarray(mask, dtype=np.uint8).tobytes())
                offsets.append(offsets[-1] + len(ids))
                lengths.append(len(ids))
            if progress is not None:
                progress(i + 1)
    np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    (tmp / "tokenizer").mkdir()
    copy_tokenizer_files(Path(tokenizer.dir), tmp / "tokenizer")
    arr = np.asarray(lengths or [0])
    stats = {"max": int(arr.max()), "mean": round(float(arr.mean()), 1), "p95": int(np.quantile(arr, 0.95))}
    meta = {
        "format": FORMAT,
        "version": 1,
        "kind": kind,
        "samples": len(dataset),
        "sequences": len(lengths),
        "tokens": int(offsets[-1]),
        "dtype": np.dtype(dtype).name,
        "source": {"file": Path(source).name, "sha256": file_sha256(Path(source))},
        "tokenizer": {"dir": "tokenizer", "fingerprint": tokenizer_fingerprint(tokenizer)},
        "sequence_tokens": stats,
        "skipped": dataset.skipped.summary(),
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return meta


class ChatShards:
    """Read side: ``len(shards)`` samples, ``shards.sequences(i)`` -> ``[(ids, supervised mask)]`` per sample,
    as the JSONL datasets return them. Refuses shards of another kind or made by another tokenizer."""

    def __init__(self, path: str | Path, kind: str, tokenizer: Any) -> None:
        self.path = Path(path)
        if not is_chat_shards(self.path):
            raise DataError(
                f"{self.path}: not a chat-shards directory (make one with `weakwater prepare --chat {kind} ...`), "
                "or pass a JSONL file",
                "not_chat_shards",
            )
        self.meta = json.loads((self.path / META_FILE).read_text(encoding="utf-8"))
        if self.meta["kind"] != kind:
            raise DataError(
                f"{self.path} holds {self.meta['kind']} data (prepare --chat {self.meta['kind']}); this stage "
                f"needs {kind} data",
                "wrong_kind",
            )
        if self.meta["tokenizer"]["fingerprint"] != tokenizer_fingerprint(tokenizer):
            raise DataError(
                f"{self.path} was tokenised with another tokenizer or chat template than this run's "
                f"({getattr(tokenizer, 'dir', tokenizer)}): re-run `weakwater prepare --chat` with it, or train "
                f"with the tokenizer in {self.path / 'tokenizer'}",
                "tokenizer_mismatch",
            )
        self.per_sample = KINDS[kind]
        self.ids = np.memmap(self.path / "ids.bin", dtype=np.dtype(self.meta["dtype"]), mode="r")
        self.mask = np.memmap(self.path / "mask.bin", dtype=np.uint8, mode="r")
        self.offsets = np.load(self.path / "offsets.npy")
        expected = self.meta["sequences"] + 1, self.meta["tokens"]
        if (len(self.offsets), len(self.ids), len(self.mask)) != (expected[0], expected[1], expected[1]):
            raise DataError(f"{self.path}: files do not match meta.json (incomplete copy?)", "corrupt_shards")

    def __len__(self) -> int:
        return int(self.meta["samples"])

    def sequences(self, i: int) -> list[tuple[list[int], list[bool]]]:
        out = []
        for j in range(i * self.per_sample, (i + 1) * self.per_sample):
            a, b = int(self.offsets[j]), int(self.offsets[j + 1])
            out.append((self.ids[a:b].astype(np.int64).tolist(), self.mask[a:b].astype(bool).tolist()))
        return out
