"""The terminal chat session behind ``weakwater chat``: history, context trimming, tool calls, streamed printing.

Chat mode renders the conversation with the model's chat template and stops at ``<|im_end|>``.
With tools the model may call them (the built-in calculator and demo-world lookup, or functions of a
Python file): each call and its result is shown dimmed and fed back until the model answers.
Raw mode continues plain text, for pretrained models that never saw a chat template (see
:func:`is_pretrain_model`).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from weakwater.infer.generate import Generator
from weakwater.infer.reasoning import ReasoningSplitter, prompt_opens_think
from weakwater.infer.sampling import SamplingParams
from weakwater.tools import CallStream, Tool, call_text, parse_call

DIM, RESET = "\033[2m", "\033[0m"
MAX_TOOL_ROUNDS = 4  # calls answered per user message before the model must reply in text


def is_pretrain_model(meta: dict[str, Any], has_chat_template: bool) -> bool:
    """Whether to chat in raw mode: the model (config.json metadata) was only pretrained, or its tokenizer
    has no chat template to render a conversation with."""
    extra = meta.get("extra") if isinstance(meta.get("extra"), dict) else {}
    return meta.get("stage") == "pretrain" or extra.get("stage") == "pretrain" or not has_chat_template


def line_reader() -> Callable[[str], str]:
    """``input`` with line editing and history when stdin is a terminal: arrow keys move the cursor and
    recall earlier messages instead of inserting escape codes, and a Chinese input method can correct
    what it typed. Importing the standard ``readline`` module is what switches this on for ``input``;
    where it does not exist (Windows), the console's own editing applies.
    """
    if sys.stdin.isatty():
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (imported for its effect on input())
    return input


class ChatSession:
    """Conversation state for the terminal chat: history, trimming, tool calls and streamed printing."""

    def __init__(
        self,
        gen: Generator,
        params: SamplingParams,
        raw: bool = False,
        system: str | None = None,
        color: bool = True,
        out: TextIO | None = None,
        tools: list[Tool] | None = None,
    ) -> None:
        self.gen, self.raw, self.system, self.color = gen, raw, system, color
        self.params = gen.reply_params(params)  # raw mode too: <|endoftext|> ends a document
        self.out = out or sys.stdout
        self.tools = {t.name: t for t in tools or []}
        self.history: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.history = []

    def _messages(self, turn: list[dict[str, Any]]) -> list[dict[str, Any]]:
        head: list[dict[str, Any]] = []
        if self.system or self.tools:
            head = [{"role": "system", "content": self.system or ""}]
            if self.tools:
                head[0]["tools"] = [t.schema() for t in self.tools.values()]
        return head + self.history + turn

    def prompt_ids(self, turn: list[dict[str, Any]] | str) -> list[int]:
        """Tokens for the next reply to ``turn`` (this exchange's messages so far), dropping the oldest
        exchanges until the prompt plus room for an answer fits the context window."""
        tok = self.gen.tokenizer
        assert tok is not None
        turn = [{"role": "user", "content": turn}] if isinstance(turn, str) else turn
        reserve = min(self.params.max_new_tokens, self.gen.max_seq_len // 2)
        budget = self.gen.max_seq_len - reserve
        if self.raw:
            return tok.encode(turn[0]["content"])[-budget:]
        while True:
            ids = self.gen.chat_prompt(self._messages(turn))
            if len(ids) <= budget or not self.history:
                break
            # Drop the oldest exchange: a user message and every reply, call and result up to the next one.
            nxt = next((i for i, m in enumerate(self.history) if i and m["role"] == "user"), len(self.history))
            self.history = self.history[nxt:]
        if len(ids) >= self.gen.max_seq_len:
            raise ValueError(f"message too long: {len(ids)} tokens, the context is {self.gen.max_seq_len}")
        return ids

    def reply(self, user: str) -> str:
        """Answer ``user``: stream the reply; run the tools it calls and continue until it answers in text."""
        turn: list[dict[str, Any]] = [{"role": "user", "content": user}]
        text = ""
        for round_no in range(MAX_TOOL_ROUNDS + 1):
            try:
                ids = self.prompt_ids(turn)
            except ValueError as e:
                print(f"(error: {e})", file=self.out)
                return ""
            text, calls, interrupted = self._stream(ids)
            if self.raw:
                return text
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                message["tool_calls"] = [
                    {"type": "function", "function": {"name": n, "arguments": a}} for n, a in calls
                ]
            turn.append(message)
            if not calls or interrupted:
                break
            if round_no == MAX_TOOL_ROUNDS:
                self._write(f"(stopped: {MAX_TOOL_ROUNDS} rounds of tool calls without an answer)\n")
                break
            for name, arguments in calls:
                result = self.tools[name].run(arguments)
                self._dim(f"<- {result}", "[tool result] ")
                turn.append({"role": "tool", "content": result})
        self.history += turn
        return text

    def _stream(self, ids: list[int]) -> tuple[str, list[tuple[str, dict[str, Any]]], bool]:
        """Stream one reply: (its text, its well-formed tool calls, whether Ctrl-C cut it)."""
        tok = self.gen.tokenizer
        assert tok is not None
        in_think = not self.raw and prompt_opens_think(tok.decode(ids[-8:]))
        split = ReasoningSplitter(in_think=in_think)
        calls_in = CallStream() if self.tools else None
        thinking, interrupted = False, False
        answer: list[str] = []
        calls: list[tuple[str, dict[str, Any]]] = []

        def content(c: str, final: bool = False) -> None:
            nonlocal thinking
            events = [("text", c)] if calls_in is None else calls_in.push(c) + (calls_in.finish() if final else [])
            for kind, piece in events:
                call = parse_call(piece, list(self.tools)) if kind == "call" else None
                if call is not None:
                    calls.append((call.name, call.arguments))
                    self._dim(f"-> {call.name}({json.dumps(call.arguments, ensure_ascii=False)})", "[tool call] ")
                    continue
                piece = call_text(piece) if kind == "call" else piece
                thinking = self._show("", piece, thinking)
                answer.append(piece)

        try:
            for delta in self.gen.stream_text(ids, self.params):
                if self.raw:
                    answer.append(delta)
                    self._write(delta)
                    continue
                r, c = split.push(delta)
                thinking = self._show(r, "", thinking)
                content(c)
            if not self.raw:
                r, c = split.finish()
                thinking = self._show(r, "", thinking)
                content(c, final=True)
        except KeyboardInterrupt:
            interrupted = True
            self._write(RESET if self.color else "")
            self._write("\n(interrupted)")
        self._write((RESET if self.color and thinking else "") + "\n")
        return "".join(answer).strip(), calls, interrupted

    def _dim(self, text: str, tag: str) -> None:
        """A tool call or result, dimmed (or tagged without colour), on its own line."""
        self._write((DIM + text + RESET if self.color else tag + text) + "\n")

    def _show(self, reasoning: str, content: str, thinking: bool) -> bool:
        """Print reasoning dimmed (or tagged) and the answer plainly; returns the new dim state."""
        if reasoning:
            if not thinking:
                self._write(DIM if self.color else "[think] ")
                thinking = True
            self._write(reasoning)
        if content:
            if thinking:
                self._write(RESET + "\n" if self.color else "\n[answer] ")
                thinking = False
            self._write(content)
        return thinking

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
