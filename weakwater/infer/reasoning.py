"""Split a model's streamed output into reasoning (inside ``<think>``) and answer text.

R1-style models write ``<think>...</think>`` then the answer, possibly wrapped in
``<answer>...</answer>``. The server puts reasoning in ``reasoning_content`` (the DeepSeek API
convention) and the answer in ``content``; the terminal chat dims the reasoning. Tags can arrive
split across deltas, so text that might be the start of a tag is held back until it is decided.
"""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_TAGS = ("<answer>", "</answer>")


def prompt_opens_think(prompt_text: str) -> bool:
    """Whether a rendered prompt ends inside an unclosed ``<think>`` (templates that pre-open it)."""
    return prompt_text.rfind(THINK_OPEN) > prompt_text.rfind(THINK_CLOSE)


class ReasoningSplitter:
    """Feed text deltas, get ``(reasoning_delta, content_delta)`` pairs back."""

    def __init__(self, in_think: bool = False) -> None:
        self.in_think = in_think
        self.buffer = ""
        self.seen_content = False

    def _tags(self) -> tuple[str, ...]:
        return (THINK_CLOSE,) if self.in_think else (THINK_OPEN, *ANSWER_TAGS)

    def push(self, text: str, final: bool = False) -> tuple[str, str]:
        self.buffer += text
        reasoning, content = [], []
        while self.buffer:
            tags = self._tags()
            hits = [(self.buffer.find(t), t) for t in tags if t in self.buffer]
            if hits:
                at, tag = min(hits)
                (reasoning if self.in_think else content).append(self.buffer[:at])
                self.buffer = self.buffer[at + len(tag) :]
                if tag == THINK_OPEN:
                    self.in_think = True
                elif tag == THINK_CLOSE:
                    self.in_think = False
                continue
            # Keep a suffix that could still grow into a tag; emit the rest.
            keep = (
                0
                if final
                else max((k for t in tags for k in range(1, len(t)) if self.buffer.endswith(t[:k])), default=0)
            )
            (reasoning if self.in_think else content).append(self.buffer[: len(self.buffer) - keep])
            self.buffer = self.buffer[len(self.buffer) - keep :]
            break
        r, c = "".join(reasoning), "".join(content)
        if not self.seen_content:
            # Templates put newlines around tags; an answer should not start with them.
            c = c.lstrip("\n")
            self.seen_content = bool(c)
        return r, c

    def finish(self) -> tuple[str, str]:
        return self.push("", final=True)


def split_reasoning(text: str, in_think: bool = False) -> tuple[str, str]:
    """Whole-text version: ``(reasoning, answer)`` with surrounding whitespace trimmed."""
    splitter = ReasoningSplitter(in_think)
    r1, c1 = splitter.push(text)
    r2, c2 = splitter.finish()
    return (r1 + r2).strip(), (c1 + c2).strip()
