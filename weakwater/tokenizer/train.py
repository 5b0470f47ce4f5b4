"""Train a byte-level BPE tokenizer from JSONL, in bounded memory, and measure its compression.

Memory: the Rust trainer keeps every distinct pre-token of its input in a hash map, and Chinese text has
few spaces, so pre-tokens are long and nearly all distinct: RAM grows like tens of bytes per input byte
(the seed project needed 89 GB). We therefore feed it a uniform random sample of lines of at most
``max_bytes`` of text, drawn in one streaming pass without holding the corpus.
"""

from __future__ import annotations

import json
import random
import sys
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from weakwater.data.chat import record_text
from weakwater.jsonl import DataError, SkipCounter, iter_raw_lines, parse_line
from weakwater.tokenizer.pretokenize import pre_tokenizer
from weakwater.tokenizer.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, TOOL_TOKENS, Tokenizer

DEFAULT_MAX_BYTES = 32 * 1024 * 1024
_SCALE = 1_000_000


def is_heldout(line_no: int, frac: float) -> bool:
    """Deterministic line-level split shared by ``train --heldout-frac`` and ``stats --heldout-frac``."""
    return frac > 0 and zlib.crc32(f"line:{line_no}".encode()) % _SCALE < frac * _SCALE


def iter_texts(
    paths: Sequence[str | Path],
    text_field: str = "text",
    max_bytes: int | None = None,
    seed: int = 0,
    heldout_frac: float = 0.0,
    heldout: bool = False,
    skipped: SkipCounter | None = None,
) -> Iterator[str]:
    """Stream texts from JSONL files (plain ``text_field`` rows or chat rows).

    max_bytes: keep each line with probability ``max_bytes / total file bytes`` (decided before parsing, so
      skipped lines cost only the read) and stop once ``max_bytes`` of text were yielded.
    heldout_frac/heldout: yield only the training lines (``heldout=False``) or only the held-out ones.
    """
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"data file not found: {p}")
    total = sum(p.stat().st_size for p in paths)
    keep = 1.0 if not max_bytes or total <= max_bytes else max_bytes / total
    rng = random.Random(seed)
    emitted = 0
    for path in paths:
        for line_no, raw in iter_raw_lines(path):
            if keep < 1.0 and rng.random() >= keep:
                continue
            if is_heldout(line_no, heldout_frac) != heldout:
                continue
            where = f"{path}:{line_no}"
            try:
                text = record_text(parse_line(raw, where), text_field, where)
            except DataError as e:
                if skipped is not None:
                    skipped.add(e.reason, where, message=e.message)
                continue
            if text:
                yield text
                emitted += len(text.encode("utf-8"))
                if max_bytes and emitted >= max_bytes:
                    return


def tokenizer_config(model_max_length: int = 32768, tool_ids: dict[str, int] | None = None) -> dict[str, Any]:
    """``tokenizer_config.json`` so ``AutoTokenizer.from_pretrained`` loads our dir with our chat template.

    eos_token is ``<|im_end|>`` (the chat stop token, what HF ``generate`` should stop on, as in MiniMind);
    ``<|endoftext|>`` separates pretraining documents and pads. ``tool_ids``: the ids the tool tags got.
    """
    specials = {**{t: i for i, t in enumerate(SPECIAL_TOKENS)}, **(tool_ids or {})}
    added = {
        str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                 "special": True}
        for t, i in specials.items()
    }  # fmt: skip
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "additional_special_tokens": [t for t in specials if t not in SPECIAL_TOKENS[:3]],
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "chat_template": CHAT_TEMPLATE,
    }


def train_tokenizer(
    data: Sequence[str | Path],
    out: str | Path,
    vocab_size: int = 6400,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    text_field: str = "text",
    seed: int = 0,
    heldout_frac: float = 0.0,
    min_frequency: int = 2,
) -> dict[str, Any]:
    """Train byte-level BPE on (a sample of) ``data`` and write ``tokenizer.json`` + ``tokenizer_config.json``.

    Special tokens get ids 0..6 in ``SPECIAL_TOKENS`` order, the tool tags (``TOOL_TOKENS``) the last 4 ids;
    all are always single tokens. Returns a summary.
    """
    reserved = len(SPECIAL_TOKENS) + len(TOOL_TOKENS)
    if vocab_size < reserved + 256:
        raise ValueError(f"vocab_size must be at least {reserved + 256} (special tokens + 256 bytes)")
    tok = _HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(TOOL_TOKENS),
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=sys.stderr.isatty(),  # the Rust trainer's own bar: terminals only, never into a log
    )
    skipped = SkipCounter()
    stats = {"docs": 0, "bytes": 0}

    def counted() -> Iterator[str]:
        for text in iter_texts(data, text_field, max_bytes, seed, heldout_frac, heldout=False, skipped=skipped):
            stats["docs"] += 1
            stats["bytes"] += len(text.encode("utf-8"))
            yield text

    tok.train_from_iterator(counted(), trainer=trainer)
    if stats["docs"] == 0:
        raise DataError(f"no usable text in {', '.join(map(str, data))}; {skipped.summary()}", "no_data")
    for i, special in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(special) != i:
            raise RuntimeError(f"special token {special} got id {tok.token_to_id(special)}, expected {i}")
    tok.add_special_tokens(list(TOOL_TOKENS))
    tool_ids = {t: tok.token_to_id(t) for t in TOOL_TOKENS}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(tool_ids=tool_ids), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return {
        "out": str(out),
        "vocab_size": tok.get_vocab_size(),
        "train_docs": stats["docs"],
        "train_bytes": stats["bytes"],
        "skipped": skipped.as_dict(),
    }


def tokenizer_stats(
    tokenizer: Tokenizer,
    data: Sequence[str | Path],
    text_field: str = "text",
    heldout_frac: float = 0.0,
    max_bytes: int | None = None,
    batch: int = 256,
) -> dict[str, Any]:
    """Compression on ``data`` (only the held-out lines when ``heldout_frac`` > 0): chars and bytes per token."""
    docs = chars = nbytes = tokens = 0
    pending: list[str] = []

    def flush() -> None:
        nonlocal tokens
        tokens += sum(len(ids) for ids in tokenizer.encode_batch(pending))
        pending.clear()

    for text in iter_texts(data, text_field, max_bytes, heldout_frac=heldout_frac, heldout=heldout_frac > 0):
        docs += 1
        chars += len(text)
        nbytes += len(text.encode("utf-8"))
        pending.append(text)
        if len(pending) >= batch:
            flush()
    flush()
    if tokens == 0:
        raise DataError(f"no usable text in {', '.join(map(str, data))}", "no_data")
    tags = SPECIAL_TOKENS + TOOL_TOKENS
    return {
        "tokenizer": str(tokenizer.dir),
        "vocab_size": tokenizer.vocab_size,
        "docs": docs,
        "chars": chars,
        "bytes": nbytes,
        "tokens": tokens,
        "chars_per_token": chars / tokens,
        "bytes_per_token": nbytes / tokens,
        "tokens_per_tag": {t: len(tokenizer.encode(t)) for t in tags},
    }
