"""Train a byte-level BPE tokenizer on texts, in bounded memory, and measure its compression.

The texts come from the caller (``weakwater tokenizer train`` reads them from JSONL of any accepted format
with :func:`weakwater.data.text.iter_texts`), so this package reads no data files.

Memory: the Rust trainer keeps every distinct pre-token of its input in a hash map, and Chinese text has
few spaces, so pre-tokens are long and nearly all distinct: RAM grows like tens of bytes per input byte
(the seed project needed 89 GB). The command therefore feeds it a uniform random sample of lines of at
most ``DEFAULT_MAX_BYTES`` of text, drawn in one streaming pass without holding the corpus.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from weakwater.jsonl import DataError, SkipCounter
from weakwater.tokenizer.pretokenize import pre_tokenizer
from weakwater.tokenizer.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, TOOL_TOKENS, Tokenizer

DEFAULT_MAX_BYTES = 32 * 1024 * 1024


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
    texts: Iterable[str],
    out: str | Path,
    vocab_size: int = 6400,
    min_frequency: int = 2,
    skipped: SkipCounter | None = None,
) -> dict[str, Any]:
    """Train byte-level BPE on ``texts`` and write ``tokenizer.json`` + ``tokenizer_config.json``.

    Special tokens get ids 0..6 in ``SPECIAL_TOKENS`` order, the tool tags (``TOOL_TOKENS``) the last 4 ids;
    all are always single tokens. ``skipped``: the counter the texts' reader fills (reported in the summary
    and in the error when no text came). Returns a summary.
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
    skipped = skipped or SkipCounter()
    stats = {"docs": 0, "bytes": 0}

    def counted() -> Iterator[str]:
        for text in texts:
            stats["docs"] += 1
            stats["bytes"] += len(text.encode("utf-8"))
            yield text

    tok.train_from_iterator(counted(), trainer=trainer)
    if stats["docs"] == 0:
        raise DataError(f"no usable text to train on; {skipped.summary()}", "no_data")
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


def tokenizer_stats(tokenizer: Tokenizer, texts: Iterable[str], batch: int = 256) -> dict[str, Any]:
    """Compression on ``texts``: chars and bytes per token."""
    docs = chars = nbytes = tokens = 0
    pending: list[str] = []

    def flush() -> None:
        nonlocal tokens
        tokens += sum(len(ids) for ids in tokenizer.encode_batch(pending))
        pending.clear()

    for text in texts:
        docs += 1
        chars += len(text)
        nbytes += len(text.encode("utf-8"))
        pending.append(text)
        if len(pending) >= batch:
            flush()
    flush()
    if tokens == 0:
        raise DataError("no usable text to measure", "no_data")
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
