"""``weakwater prepare``: pretraining JSONL -> deduplicated binary token shards, streaming and in parallel.

Pipeline: the main process reads raw lines in bounded chunks and hands them to a pool of worker processes
(parse, validate, normalise, hash, tokenise, optional MinHash); results come back in input order and the
main process drops duplicates, assigns train/val and appends tokens to the current shard file. At most
``2 * workers`` chunks are in flight, so memory does not depend on the input size (except the duplicate
index: 16 bytes per document for exact dedup, plus 16 bytes per LSH band for MinHash).

Output directory: ``train_000000.bin``, ... ``val_000000.bin`` (raw uint16/uint32 token ids, every document
followed by EOS), ``tokenizer/`` (a copy of the tokenizer files, so the shards find their tokenizer from any
working directory) and ``meta.json`` (written last: a directory without it is incomplete).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from weakwater.console import Progress
from weakwater.jsonl import (
    MAX_LINE_BYTES,
    DataError,
    SkipCounter,
    describe_skips,
    get_text,
    iter_raw_lines,
    parse_line,
)
from weakwater.tokenizer.tokenizer import Tokenizer, load_tokenizer

CHUNK_LINES = 2048
CHUNK_BYTES = 8 * 1024 * 1024
DEFAULT_SHARD_TOKENS = 100_000_000
MINHASH_PERM = 128
SHINGLE_CHARS = 5
_SCALE = 1_000_000
META_FILE = "meta.json"
TOKENIZER_SUBDIR = "tokenizer"  # a copy of the tokenizer files, next to the shards


@dataclass
class Doc:
    """One tokenised document as returned by a worker."""

    where: str
    tokens: np.ndarray  # document ids followed by EOS, already in the shard dtype
    text_hash: int  # 64-bit hash of the normalised text (exact dedup and the train/val split)
    n_chars: int
    n_bytes: int
    minhash: np.ndarray | None = None


@dataclass
class ChunkResult:
    docs: list[Doc] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (reason, where, message)


# ---------------------------------------------------------------- worker side

_WORKER: dict[str, Any] = {}


def _init_worker(tokenizer_dir: str, text_field: str, strict: bool, dtype: str, minhash: bool) -> None:
    """Per-process state: each worker loads the tokenizer once and tokenises single-threaded."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tok = load_tokenizer(tokenizer_dir)
    _WORKER.update(tok=tok, text_field=text_field, strict=strict, dtype=np.dtype(dtype), minhash=minhash)


def normalise(text: str) -> str:
    """Form used for duplicate detection: case-folded, all whitespace removed (re-wrapped copies still match)."""
    return "".join(text.split()).casefold()


def hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _crc32(data: bytes) -> int:
    return zlib.crc32(data)


def minhash_signature(norm: str) -> np.ndarray:
    """MinHash over character 5-grams: works for Chinese, which has no word boundaries to shingle on."""
    from datasketch import MinHash

    n = max(1, len(norm) - SHINGLE_CHARS + 1)
    shingles = {norm[i : i + SHINGLE_CHARS].encode("utf-8") for i in range(n)}
    m = MinHash(num_perm=MINHASH_PERM, hashfunc=_crc32, seed=1)
    m.update_batch(list(shingles))
    return m.hashvalues


def _process_chunk(path: str, lines: list[tuple[int, bytes | None]]) -> ChunkResult:
    tok: Tokenizer = _WORKER["tok"]
    result = ChunkResult()
    texts, metas = [], []
    for line_no, raw in lines:
        where = f"{path}:{line_no}"
        try:
            text = get_text(parse_line(raw, where), _WORKER["text_field"], where)
        except DataError as e:
            if _WORKER["strict"]:
                raise
            result.skipped.append((e.reason, where, e.message))
            continue
        norm = normalise(text)
        if not norm:
            result.skipped.append(("empty_text", where, f"{where}: empty text"))
            continue
        texts.append(text)
        metas.append((where, norm))
    eos = tok.eos_id
    for text, (where, norm), ids in zip(texts, metas, tok.encode_batch(texts)):
        ids.append(eos)
        result.docs.append(
            Doc(
                where=where,
                tokens=np.asarray(ids, dtype=_WORKER["dtype"]),
                text_hash=hash64(norm.encode("utf-8")),
                n_chars=len(text),
                n_bytes=len(text.encode("utf-8")),
                minhash=minhash_signature(norm) if _WORKER["minhash"] else None,
            )
        )
    return result


# ---------------------------------------------------------------- main side


class HashSet64:
    """Compact set of 64-bit hashes (open addressing in a numpy array): 16 bytes per entry at load <= 1/2.

    A Python ``set`` of ints costs ~60 bytes per document; this keeps exact dedup cheap on 100M-doc corpora.
    """

    def __init__(self, capacity: int = 1 << 16):
        self.table = np.zeros(capacity, dtype=np.uint64)  # 0 marks an empty slot
        self.size = 0

    def add(self, h: int) -> bool:
        """Insert ``h``; True if it was new."""
        if 2 * (self.size + 1) > len(self.table):
            self._grow()
        h = h or 1  # keep 0 free as the empty marker
        i = self._slot(h)
        if int(self.table[i]) == h:
            return False
        self.table[i] = h
        self.size += 1
        return True

    def __contains__(self, h: int) -> bool:
        h = h or 1
        return int(self.table[self._slot(h)]) == h

    def _slot(self, h: int) -> int:
        """Where ``h`` is, or the empty slot where it belongs (linear probing from ``h mod size``)."""
        table, mask = self.table, len(self.table) - 1
        i = h & mask
        while True:
            slot = int(table[i])
            if slot == 0 or slot == h:
                return i
            i = (i + 1) & mask

    def _grow(self) -> None:
        old = self.table[self.table != 0]
        self.table = np.zeros(2 * len(self.table), dtype=np.uint64)
        self.size = 0
        for h in old.tolist():
            self.add(h)


class NearDupIndex:
    """MinHash LSH that keeps only band hashes: ``bands`` compact sets, 16 bytes per band per document.

    Same rule as ``datasketch.MinHashLSH`` (a document is a near duplicate when any band of its signature
    equals that band of an earlier kept document; bands/rows chosen by datasketch for the threshold), but
    without storing signatures and keys, which cost ~4 KB per document and would not fit 1M+ documents.
    """

    def __init__(self, threshold: float, num_perm: int = MINHASH_PERM):
        from datasketch import MinHashLSH

        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.bands, self.rows = lsh.b, lsh.r
        self.seen = [HashSet64() for _ in range(self.bands)]

    def add(self, signature: np.ndarray) -> bool:
        """Record ``signature``; True if new, False (and not recorded) for a near duplicate."""
        r = self.rows
        keys = [hash64(signature[i * r : (i + 1) * r].tobytes()) for i in range(self.bands)]
        if any(key in band for key, band in zip(keys, self.seen)):
            return False
        for key, band in zip(keys, self.seen):
            band.add(key)
        return True


class ShardWriter:
    """Appends token arrays to ``{split}_{k:06d}.bin``, starting a new file after ``shard_tokens`` tokens."""

    def __init__(self, out: Path, split: str, shard_tokens: int):
        self.out, self.split, self.shard_tokens = out, split, shard_tokens
        self.files: list[str] = []
        self.tokens = 0
        self.docs = 0
        self._f = None
        self._in_shard = 0

    def write(self, tokens: np.ndarray) -> None:
        if self._f is None or self._in_shard >= self.shard_tokens:
            self._open_next()
        tokens.tofile(self._f)
        self._in_shard += len(tokens)
        self.tokens += len(tokens)
        self.docs += 1

    def _open_next(self) -> None:
        self.close()
        name = f"{self.split}_{len(self.files):06d}.bin"
        self.files.append(name)
        self._f = open(self.out / name, "wb")  # noqa: SIM115 (kept open across writes, closed in close())
        self._in_shard = 0

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _chunks(paths: Sequence[Path], max_line_bytes: int) -> Iterator[tuple[str, bool, list]]:
    """Bounded chunks ``(path, is_val_file, [(line_no, raw), ...])`` in input order."""
    for path, is_val in paths:
        lines: list[tuple[int, bytes | None]] = []
        size = 0
        for line_no, raw in iter_raw_lines(path, max_line_bytes):
            lines.append((line_no, raw))
            size += len(raw) if raw else 0
            if len(lines) >= CHUNK_LINES or size >= CHUNK_BYTES:
                yield str(path), is_val, lines
                lines, size = [], 0
        if lines:
            yield str(path), is_val, lines


def _results(chunks: Iterator[tuple[str, bool, list]], workers: int, initargs: tuple) -> Iterator[tuple[bool, Any]]:
    """Run ``_process_chunk`` over chunks, in order, with at most ``2 * workers`` chunks in flight."""
    if workers <= 1:
        _init_worker(*initargs)
        for path, is_val, lines in chunks:
            yield is_val, _process_chunk(path, lines)
        return
    # spawn, not fork: the parent may hold torch/tokenizers threads, which fork can deadlock.
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=initargs) as pool:
        pending: deque = deque()
        for path, is_val, lines in chunks:
            pending.append((is_val, pool.apply_async(_process_chunk, (path, lines))))
            if len(pending) >= 2 * workers:
                is_val, job = pending.popleft()
                yield is_val, job.get()
        while pending:
            is_val, job = pending.popleft()
            yield is_val, job.get()


def prepare(
    data: Sequence[str | Path],
    tokenizer: str | Path,
    out: str | Path,
    val_frac: float = 0.01,
    val_data: Sequence[str | Path] = (),
    workers: int | None = None,
    strict: bool = False,
    dedup: str = "exact",
    minhash_threshold: float = 0.8,
    text_field: str = "text",
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    max_line_bytes: int = MAX_LINE_BYTES,
    verbose: bool = False,
) -> dict[str, Any]:
    """Tokenise JSONL ``data`` into shards in ``out``; returns the stats also saved in ``meta.json``.

    val_frac: fraction of documents (chosen by content hash, so duplicates never straddle the split) for
      validation; ignored when ``val_data`` files are given, which then form the whole validation split.
    dedup: ``exact`` (normalised-text hash), ``minhash`` (exact + near duplicates by MinHash LSH), ``none``.
    """
    if dedup not in ("exact", "minhash", "none"):
        raise ValueError(f"dedup must be exact, minhash or none, got {dedup!r}")
    if not 0 <= val_frac < 1:
        raise ValueError(f"val_frac must be in [0, 1), got {val_frac}")
    paths = [(Path(p), False) for p in data] + [(Path(p), True) for p in val_data]
    for p, _ in paths:
        if not p.is_file():
            raise FileNotFoundError(f"data file not found: {p}")
    if val_data:
        val_frac = 0.0
    tok = load_tokenizer(tokenizer)
    dtype = "uint16" if tok.vocab_size <= 65535 else "uint32"
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)
    for stale in [*out.glob("train_*.bin"), *out.glob("val_*.bin")]:
        stale.unlink()

    start = time.perf_counter()
    writers = {s: ShardWriter(out, s, shard_tokens) for s in ("train", "val")}
    skipped = SkipCounter()
    seen = HashSet64()
    near = NearDupIndex(minhash_threshold) if dedup == "minhash" else None
    counts = {"docs_read": 0, "exact_duplicates": 0, "near_duplicates": 0, "chars": 0, "bytes": 0}
    progress = Progress(None, "prepare", unit="docs") if verbose else None
    initargs = (str(tok.dir), text_field, strict, dtype, dedup == "minhash")
    try:
        for is_val_file, result in _results(_chunks(paths, max_line_bytes), workers, initargs):
            for reason, where, message in result.skipped:
                skipped.add(reason, where, message=message)
            for doc in result.docs:
                counts["docs_read"] += 1
                if dedup != "none" and not seen.add(doc.text_hash):
                    counts["exact_duplicates"] += 1
                    continue
                if near is not None and not near.add(doc.minhash):
                    counts["near_duplicates"] += 1
                    continue
                is_val = is_val_file or (doc.text_hash % _SCALE) < val_frac * _SCALE
                writers["val" if is_val else "train"].write(doc.tokens)
                counts["chars"] += doc.n_chars
                counts["bytes"] += doc.n_bytes
            if progress is not None:
                progress.update(len(result.docs))
                progress.set_postfix(train_tokens=f"{writers['train'].tokens:,}")
    finally:
        for w in writers.values():
            w.close()
        if progress is not None:
            progress.close()

    kept_docs = writers["train"].docs + writers["val"].docs
    if writers["train"].tokens == 0:
        raise DataError(f"no training documents in {', '.join(str(p) for p, _ in paths)}; {skipped.summary()}")
    seconds = time.perf_counter() - start
    text_tokens = writers["train"].tokens + writers["val"].tokens - kept_docs  # without the EOS separators
    input_bytes = sum(p.stat().st_size for p, _ in paths)
    stats = {
        **counts,
        "docs_kept": kept_docs,
        "skipped": skipped.as_dict(),
        "dropped_empty": skipped.counts.get("empty_text", 0),
        "tokens": writers["train"].tokens + writers["val"].tokens,
        "bytes_per_token": counts["bytes"] / max(1, text_tokens),
        "chars_per_token": counts["chars"] / max(1, text_tokens),
        "input_bytes": input_bytes,
        "seconds": round(seconds, 3),
        "input_mb_per_s": round(input_bytes / 1e6 / max(seconds, 1e-9), 3),
        "workers": workers,
        "dedup": dedup,
    }
    from weakwater.model.io import copy_tokenizer_files, file_sha256  # lazily: spawned workers need no torch

    meta = {
        "format": "weakwater-tokens",
        "version": 1,
        "dtype": dtype,
        "vocab_size": tok.vocab_size,
        "eos_id": tok.eos_id,
        # The tokenizer travels with the shards (a path relative to the working directory of `prepare`
        # broke as soon as training ran from another folder); "source" only records where it came from.
        "tokenizer": {
            "dir": TOKENIZER_SUBDIR,
            "source": str(tok.dir.resolve()),
            "sha256": file_sha256(tok.dir / "tokenizer.json"),
        },
        "sources": [{"path": str(p), "val": v} for p, v in paths],
        "splits": {s: {"files": w.files, "tokens": w.tokens, "docs": w.docs} for s, w in writers.items()},
        "stats": stats,
    }

    tok_copy = out / TOKENIZER_SUBDIR
    shutil.rmtree(tok_copy, ignore_errors=True)
    tok_copy.mkdir()
    copy_tokenizer_files(tok.dir, tok_copy)
    tmp = out / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / META_FILE)
    return meta


def format_summary(meta: dict[str, Any]) -> str:
    """Human-readable stats printed at the end of ``weakwater prepare``."""
    s, splits = meta["stats"], meta["splits"]
    lines = [
        f"documents read      {s['docs_read']:,}",
        f"documents kept      {s['docs_kept']:,} (train {splits['train']['docs']:,}, val {splits['val']['docs']:,})",
        f"tokens              {s['tokens']:,} (train {splits['train']['tokens']:,}, val {splits['val']['tokens']:,},"
        f" {meta['dtype']})",
        f"exact duplicates    {s['exact_duplicates']:,}",
        f"near duplicates     {s['near_duplicates']:,}",
        f"skipped lines       {s['skipped']['total']:,}",
        f"bytes/token         {s['bytes_per_token']:.3f} (chars/token {s['chars_per_token']:.3f})",
        f"time                {s['seconds']:.1f}s ({s['input_mb_per_s']:.2f} MB/s with {s['workers']} workers)",
    ]
    if s["skipped"]["total"]:
        lines.append(describe_skips(s["skipped"]))
    return "\n".join(lines)
