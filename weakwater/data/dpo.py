"""Preference pairs ``{"chosen": [...], "rejected": [...]}`` for DPO-family training.

Each side is a full conversation ending in an assistant turn; both must share the same prompt (every
turn before the last), since the DPO objective compares two answers to one prompt. Only the final
assistant turn (content + ``<|im_end|>``) enters the log-probability. Over-long sides follow the one
truncation policy (:mod:`weakwater.data.truncation`), are counted, and are measured before training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from weakwater.data.chat import ConversationError, Message, _from_role_content, validate
from weakwater.data.packing import lay_out
from weakwater.data.sft import LazyRecords, _require_rows, open_chat_shards, tokenize_conversation
from weakwater.data.truncation import LengthReport, TruncationCounter, fit_window, measure
from weakwater.jsonl import SkipCounter
from weakwater.model.loglik import IGNORE_INDEX
from weakwater.tokenizer.tokenizer import ChatTokenizer


def to_pair(record: Any) -> tuple[list[Message], list[Message]]:
    """Validate one preference record; raises :class:`ConversationError` naming the field."""
    if not isinstance(record, dict):
        raise ConversationError("<line>", f"expected a JSON object, got {type(record).__name__}", "not_object")
    sides = []
    for key in ("chosen", "rejected"):
        if key not in record:
            raise ConversationError(key, "missing", "missing_field")
        raw = _from_role_content(record[key], key)
        messages = validate(raw, key)
        if len(messages) != len(raw):
            raise ConversationError(key, "must end with an assistant turn", "turn_order")
        sides.append(messages)
    chosen, rejected = sides
    if chosen[:-1] != rejected[:-1]:
        raise ConversationError(
            "rejected", "different prompts: chosen and rejected must share every turn but the last", "different_prompts"
        )
    return chosen, rejected


class PreferenceDataset(Dataset):
    """Items ``{"index", "chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask"}`` (mask: last turn).

    ``index`` is ``index_offset + i``: a stable row id for precomputed reference log-probs.
    """

    def __init__(
        self, path: str | Path, tokenizer: ChatTokenizer, max_len: int, strict: bool = False, index_offset: int = 0
    ) -> None:
        self.tokenizer = tokenizer
        self.index_offset = index_offset  # keeps val indices apart from train ones (precomputed reference rows)
        self.max_len = max_len
        self.skipped = SkipCounter()
        self.shards = open_chat_shards(path, "dpo", tokenizer)  # pre-tokenised (prepare --chat dpo) or None
        if self.shards is None:
            self.records = LazyRecords(path, strict, self.skipped, to_pair)
            _require_rows(self.records, self.skipped, "preference pairs")
        self.truncation = TruncationCounter()

    @property
    def stats(self) -> dict[str, int]:
        return {"pairs": len(self), **self.truncation.stats()}

    def sequences(self, i: int) -> list[tuple[list[int], list[bool]]]:
        """Both sides of pair ``i`` untruncated (mask: the last assistant turn)."""
        if self.shards is not None:
            return self.shards.sequences(i)
        return [tokenize_conversation(self.tokenizer, m, last_turn_only=True) for m in self.records[i]]

    def length_report(self, seed: int = 0) -> LengthReport:
        return measure(len(self), self.sequences, self.max_len, "pair sides", seed)

    def __len__(self) -> int:
        return len(self.shards if self.shards is not None else self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"index": self.index_offset + i}
        for side, (ids, mask) in zip(("chosen", "rejected"), self.sequences(i)):
            ids, mask, how = fit_window(ids, mask, self.max_len)
            self.truncation.record((i, side), how)
            item[f"{side}_ids"] = torch.tensor(ids, dtype=torch.long)
            item[f"{side}_mask"] = torch.tensor(mask, dtype=torch.bool)
        return item


def collate_pairs(samples: list[dict[str, Any]], pad_id: int, pack_len: int = 0) -> dict[str, torch.Tensor]:
    """One batch of 2B sequences, chosen ones first, then rejected (one forward pass for both).

    ``pack_len`` 0: one sequence per row, right-padded. ``pack_len`` > 0: packed into rows of that
    many tokens; ``segment_ids`` then says which of the 2B sequences each token belongs to.
    """
    if not samples:
        raise ValueError("empty batch")
    sides = [(s["chosen_ids"], s["chosen_mask"]) for s in samples] + [
        (s["rejected_ids"], s["rejected_mask"]) for s in samples
    ]
    pieces = [{"input_ids": ids[:-1], "labels": torch.where(mask[1:], ids[1:], IGNORE_INDEX)} for ids, mask in sides]
    batch = lay_out(pieces, {"input_ids": pad_id, "labels": IGNORE_INDEX}, pack_len)
    batch["index"] = torch.tensor([s["index"] for s in samples], dtype=torch.long)
    return batch
