"""Tokenised chat datasets with an assistant-only loss mask, read lazily through a byte-offset index.

Mask rule (checked token by token in tests): a token is supervised iff it lies inside an assistant
turn's rendered content, from the first token after ``<|im_start|>assistant\\n`` up to and including
the closing ``<|im_end|>``. The ``\\n`` the template writes after ``<|im_end|>`` is *not* supervised:
generation stops at ``<|im_end|>``, so the model never has to produce that newline, and learning it
would only teach a token that is always followed by the next ``<|im_start|>`` anyway.

The rendered text is cut at these boundaries and each piece is encoded separately, so the prompt
part is tokenised exactly as at inference (``render_chat(..., add_generation_prompt=True)``).

Over-long samples follow the one truncation policy of :mod:`weakwater.data.truncation` (counted in
:attr:`ChatDataset.stats`, and measured before training by :meth:`ChatDataset.length_report`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from weakwater.data.chat import ConversationError, Message, read_conversations, to_messages
from weakwater.data.packing import lay_out
from weakwater.data.truncation import LengthReport, TruncationCounter, fit_window, measure
from weakwater.jsonl import DataError, SkipCounter
from weakwater.model.loglik import IGNORE_INDEX
from weakwater.tokenizer.tokenizer import ChatTokenizer


def assistant_segments(tokenizer: ChatTokenizer, messages: list[Message]) -> list[tuple[str, bool]]:
    """The rendered conversation cut into (text, supervised) pieces; assistant spans end with <|im_end|>."""
    text = tokenizer.render_chat(messages)
    header = tokenizer.decode([tokenizer.im_start_id]) + "assistant\n"
    end = tokenizer.decode([tokenizer.im_end_id])
    pieces: list[tuple[str, bool]] = []
    pos = 0
    while (h := text.find(header, pos)) >= 0:
        start = h + len(header)
        stop = text.find(end, start)
        if stop < 0:
            raise ConversationError("conversations", "rendered assistant turn has no closing " + end)
        stop += len(end)
        pieces += [(text[pos:start], False), (text[start:stop], True)]
        pos = stop
    pieces.append((text[pos:], False))
    if not any(sup for _, sup in pieces):
        raise ConversationError("conversations", "chat template rendered no assistant turn")
    return [(t, s) for t, s in pieces if t]


def tokenize_conversation(
    tokenizer: ChatTokenizer, messages: list[Message], last_turn_only: bool = False
) -> tuple[list[int], list[bool]]:
    """Token ids and a per-token supervised flag (all assistant turns, or only the last one: DPO)."""
    pieces = assistant_segments(tokenizer, messages)
    if last_turn_only:
        last = max(i for i, (_, sup) in enumerate(pieces) if sup)
        pieces = [(t, sup and i == last) for i, (t, sup) in enumerate(pieces)]
    ids: list[int] = []
    mask: list[bool] = []
    for text, sup in pieces:
        piece = tokenizer.encode(text)
        ids += piece
        mask += [sup] * len(piece)
    return ids, mask


def line_offsets(path: Path) -> np.ndarray:
    """Byte offset of every line start (index 0 = line 1); one sequential pass, no parsing."""
    offsets = []
    with path.open("rb") as f:
        pos = 0
        for line in f:
            offsets.append(pos)
            pos += len(line)
    return np.asarray(offsets, dtype=np.int64)


class LazyRecords:
    """Valid records of a JSONL file kept as byte offsets; each access re-reads and re-parses one line.

    Holding 8 bytes per sample instead of the parsed text lets multi-GB SFT files train in little RAM.
    CSV files (small by nature) are kept parsed in memory.
    """

    def __init__(self, path: str | Path, strict: bool, skipped: SkipCounter, validate: Any) -> None:
        self.path = Path(path)
        self.validate = validate
        if self.path.suffix.lower() == ".csv":
            self.rows: list[Any] | None = [m for _, m in read_conversations(self.path, strict, skipped)]
            self.offsets = np.arange(len(self.rows), dtype=np.int64)
            return
        self.rows = None
        all_offsets = line_offsets(self.path) if self.path.exists() else np.zeros(0, np.int64)
        keep = [line_no - 1 for line_no, _ in self._valid(strict, skipped)]
        self.offsets = all_offsets[np.asarray(keep, dtype=np.int64)]

    def _valid(self, strict: bool, skipped: SkipCounter) -> Iterator[tuple[int, Any]]:
        from weakwater.jsonl import read_jsonl

        for line_no, record in read_jsonl(self.path, strict=strict, skipped=skipped):
            try:
                yield line_no, self.validate(record)
            except ConversationError as e:
                if strict:
                    raise DataError(f"{self.path}:{line_no}: {e}", e.key) from e
                skipped.add(e.key, f"{self.path}:{line_no}", message=f"{self.path}:{line_no}: {e}")

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> Any:
        if self.rows is not None:
            return self.rows[i]
        with self.path.open("rb") as f:
            f.seek(int(self.offsets[i]))
            line = f.readline()
        return self.validate(json.loads(line.decode("utf-8").lstrip("\ufeff")))


def _require_rows(records: LazyRecords, skipped: SkipCounter, what: str) -> None:
    if len(records) == 0:
        raise DataError(f"{records.path}: no usable {what}; {skipped.summary()}", "empty_dataset")


class ChatDataset(Dataset):
    """SFT samples: ``{"ids": LongTensor[L], "mask": BoolTensor[L]}`` with ``L <= max_len``.

    ``path`` is a chat JSONL/CSV file (tokenised as samples are read) or a directory of pre-tokenised chat
    shards (``weakwater prepare --chat sft``, :mod:`weakwater.data.chat_shards`): the same samples.
    ``max_len`` counts tokens including the one shifted off for labels (``seq_len + 1``).
    ``stats`` counts samples seen truncated (by policy), and ``skipped`` the lines dropped at load.
    """

    def __init__(
        self, path: str | Path, tokenizer: ChatTokenizer, max_len: int, strict: bool = False, fmt: str = "auto"
    ) -> None:
        if max_len < 4:
            raise ValueError(f"max_len must be >= 4 tokens, got {max_len}")
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.skipped = SkipCounter()
        self.shards = open_chat_shards(path, "sft", tokenizer)
        if self.shards is None:
            self.records = LazyRecords(path, strict, self.skipped, lambda r: to_messages(r, fmt))
            _require_rows(self.records, self.skipped, "conversations")
        self.truncation = TruncationCounter()

    @property
    def stats(self) -> dict[str, int]:
        return {"samples": len(self), **self.truncation.stats()}

    def sequences(self, i: int) -> list[tuple[list[int], list[bool]]]:
        """Sample ``i`` untruncated: ``[(ids, supervised mask)]``."""
        if self.shards is not None:
            return self.shards.sequences(i)
        return [tokenize_conversation(self.tokenizer, self.records[i])]

    def length_report(self, seed: int = 0) -> LengthReport:
        """Lengths and what the window will cut (see :func:`weakwater.data.truncation.check_lengths`)."""
        return measure(len(self), self.sequences, self.max_len, "conversations", seed)

    def __len__(self) -> int:
        return len(self.shards if self.shards is not None else self.records)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        [(ids, mask)] = self.sequences(i)
        ids, mask, how = fit_window(ids, mask, self.max_len)
        self.truncation.record(i, how)
        return {"ids": torch.tensor(ids, dtype=torch.long), "mask": torch.tensor(mask, dtype=torch.bool)}


def open_chat_shards(path: str | Path, kind: str, tokenizer: ChatTokenizer) -> Any:
    """The pre-tokenised shards at ``path`` when it is a directory (checked: kind, tokenizer), else None."""
    if not Path(path).is_dir():
        return None
    from weakwater.data.chat_shards import ChatShards

    return ChatShards(path, kind, tokenizer)


@dataclass
class SFTCollator:
    """Batches samples: ``labels`` are the ids shifted left, ``IGNORE_INDEX`` where not supervised.

    ``weights`` (float, same shape as labels) is 1 on supervised labels, ``tag_weight`` on supervised
    labels whose id is in ``tag_ids`` (distillation), 0 elsewhere; the loss is sum(w * nll) / sum(w).
    Each sample is shifted on its own, so no label ever crosses from one sample into the next.
    ``pack_len`` 0 right-pads one sample per row (causal attention never lets a real token see later
    padding, so no mask is needed); ``pack_len`` > 0 packs the samples into rows of that many tokens
    with a per-sample attention mask (:mod:`weakwater.data.packing`): the same samples, the same loss.
    """

    pad_id: int
    tag_ids: tuple[int, ...] = ()
    tag_weight: float = 1.0
    pack_len: int = 0

    def __call__(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        pieces = []
        tags = torch.tensor(self.tag_ids, dtype=torch.long)
        for s in samples:
            ids, tmask = s["ids"], s["mask"][1:]
            labels = torch.where(tmask, ids[1:], IGNORE_INDEX)
            weights = tmask.float()
            if self.tag_ids and self.tag_weight != 1.0:
                weights[torch.isin(labels, tags) & tmask] = self.tag_weight
            pieces.append({"input_ids": ids[:-1], "labels": labels, "weights": weights})
        return lay_out(pieces, {"input_ids": self.pad_id, "labels": IGNORE_INDEX, "weights": 0.0}, self.pack_len)


def tag_token_ids(tokenizer: ChatTokenizer) -> tuple[int, ...]:
    """Ids of ``<think> </think> <answer> </answer>`` that exist as single tokens (MiniMind2 has none)."""
    found = (tokenizer.token_to_id(t) for t in ("<think>", "</think>", "<answer>", "</answer>"))
    return tuple(i for i in found if i is not None)
