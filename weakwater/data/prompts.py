"""Prompt sets for the stages that generate their own answers (RL, online DPO).

One record becomes one prompt (the chat to continue) plus an optional gold answer for verifiable rewards.
Formats, detected per line:

- MiniMind RL / chat ``{"conversations": [...]}`` (or ``messages``): the conversation without its final
  assistant turn is the prompt (:func:`weakwater.data.chat.prompt_record`). The gold answer is the record's
  ``answer`` (or MiniMind-3's scalar ``gt``) field if present, else the ``<answer>`` of an R1-format final reply
  (MiniMind's ``rlaif`` files put the placeholder "空" there: no gold answer, so only reward functions that need
  none apply);
- ``{"prompt": str | [messages], "answer": str | number}``;
- GSM8K ``{"question": str, "answer": "...steps... #### 42"}``: the gold answer is the part after ``####``.

Bad records raise :class:`DataError` naming file, line and field (strict), or are skipped and counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from weakwater.data.chat import ConversationError, Message, prompt_record, to_messages
from weakwater.jsonl import DataError, SkipCounter, read_jsonl


def _answer_field(record: dict[str, Any], where: str) -> str | None:
    value = record.get("answer")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(
            f"{where}: field 'answer' must be a string or a number, got {type(value).__name__}", "wrong_type"
        )
    return str(value).strip() or None


def parse_prompt(record: Any, where: str) -> tuple[list[Message], str | None]:
    """(prompt messages ending in a user turn, gold answer or None) for one record of any supported format."""
    from weakwater.answers import extract_answer, gsm8k_gold

    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}", "not_object")
    if "conversations" in record or "messages" in record:
        try:
            messages, gt = prompt_record(record)
        except ConversationError as e:
            raise DataError(f"{where}: {e}", e.key) from e
        gold = _answer_field(record, where)
        if gold is None and isinstance(gt, (str, int, float)) and not isinstance(gt, bool):
            gold = str(gt).strip() or None
        turns = record.get("conversations", record.get("messages"))
        reply = turns[-1].get("content") if turns[-1].get("role") == "assistant" else None
        if gold is None and isinstance(reply, str) and "<answer>" in reply:
            gold = extract_answer(reply)
        return messages, gold
    if "prompt" in record:
        prompt = record["prompt"]
        if isinstance(prompt, str):
            if not prompt.strip():
                raise DataError(f"{where}: field 'prompt' is empty", "empty_field")
            messages = [{"role": "user", "content": prompt}]
        elif isinstance(prompt, list):
            try:
                messages = to_messages({"messages": prompt}, prompt=True)
            except ConversationError as e:
                raise DataError(f"{where}: field 'prompt': {e}", e.key) from e
            if messages[-1]["role"] not in ("user", "tool"):
                raise DataError(f"{where}: field 'prompt': must end with a user turn", "turn_order")
        else:
            raise DataError(
                f"{where}: field 'prompt' must be a string or a list of messages, got {type(prompt).__name__}",
                "wrong_type",
            )
        return messages, _answer_field(record, where)
    if "question" in record:
        question = record["question"]
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: field 'question' must be a non-empty string", "wrong_type")
        gold = _answer_field(record, where)
        if gold is not None and "####" in gold:
            try:
                gold = gsm8k_gold(gold)
            except ValueError as e:
                raise DataError(f"{where}: field 'answer': {e}", "invalid_answer") from e
        return [{"role": "user", "content": question}], gold
    raise DataError(
        f"{where}: missing field 'conversations', 'prompt' or 'question' (an RL prompt record)", "missing_field"
    )


class PromptDataset(Dataset):
    """Tokenised prompts (chat template with the generation prompt) and gold answers, read eagerly.

    Prompts longer than ``max_prompt_len`` tokens are skipped and counted (strict: an error), since cutting
    a prompt changes the question.
    """

    def __init__(
        self,
        path: str | Path,
        tokenizer: Any,
        max_prompt_len: int,
        strict: bool = False,
        require_answer: bool = False,
    ) -> None:
        self.path = Path(path)
        self.skipped = SkipCounter()
        self.items: list[dict[str, Any]] = []
        for line_no, record in read_jsonl(self.path, strict=strict, skipped=self.skipped):
            where = f"{self.path}:{line_no}"
            try:
                messages, gold = parse_prompt(record, where)
                if require_answer and gold is None:
                    raise DataError(
                        f"{where}: field 'answer': missing (the math reward needs a gold answer)", "no_answer"
                    )
                ids = tokenizer.encode(tokenizer.render_chat(messages, add_generation_prompt=True))
                if len(ids) > max_prompt_len:
                    raise DataError(
                        f"{where}: prompt has {len(ids)} tokens, more than --max-prompt-len {max_prompt_len}",
                        "prompt_too_long",
                    )
            except DataError as e:
                if strict:
                    raise
                self.skipped.add(e.reason, where)
                continue
            self.items.append({"prompt_ids": ids, "messages": messages, "answer": gold, "line": line_no})
        if not self.items:
            raise DataError(f"{self.path}: no usable prompts ({self.skipped.summary()})", "empty")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"index": index, **self.items[index]}


def collate_prompts(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A CPU batch of prompts: dataset indices as a tensor (they seed the sampling), the rest as lists."""
    return {
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
        "prompt_ids": [s["prompt_ids"] for s in samples],
        "messages": [s["messages"] for s in samples],
        "answers": [s["answer"] for s in samples],
    }
