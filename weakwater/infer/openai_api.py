"""OpenAI's wire format for ``weakwater serve``: the request schemas, the error body, usage counts, tool calls
as response objects and as stream deltas, and server-sent events. The routes, request checks and the
generation flow are in :mod:`weakwater.infer.server`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from weakwater.tokenizer.tokenizer import TOOL_TOKENS
from weakwater.tools import ToolCall

MAX_STOP_STRINGS = 4
# Stripped from message text: turn delimiters (a client could forge turns) and the tool tags (calls and
# results travel in ``tool_calls`` and ``tool`` messages, never as tags inside text).
CONTROL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", *TOOL_TOKENS)


class APIError(Exception):
    """An error reported to the client as OpenAI's JSON error body."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


# Request schemas are strict: a string where a number belongs is a 400, not a guess.


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class FunctionCall(_Strict):
    name: str
    arguments: str  # a JSON object, as text (OpenAI's wire format)


class ToolCallIn(_Strict):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class StreamOptions(_Strict):
    include_usage: bool = False


class SamplingRequest(_Strict):
    """The sampling fields both endpoints take."""

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def stop_strings(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise APIError(400, f"at most {MAX_STOP_STRINGS} stop sequences are allowed", param="stop")
        return tuple(s for s in stops if s)


class FunctionDef(_Strict):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(_Strict):
    type: Literal["function"]
    function: FunctionDef


class ChosenFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: ChosenFunction


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None

    def conversation(self) -> list[dict[str, Any]]:
        """The messages as plain dicts in our roles (``developer`` is ``system``), text stripped of turn
        delimiters and tool tags (:func:`strip_control`), calls with their arguments still JSON text."""
        messages: list[dict[str, Any]] = []
        for m in self.messages:
            message: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role}
            message["content"] = strip_control(m.text())
            if m.role == "assistant" and m.reasoning_content:
                message["reasoning_content"] = m.reasoning_content
            if m.tool_calls:
                message["tool_calls"] = [
                    {**({"id": c.id} if c.id else {}), "type": "function", "function": c.function.model_dump()}
                    for c in m.tool_calls
                ]
            if m.tool_call_id is not None:
                message["tool_call_id"] = m.tool_call_id
            messages.append(message)
        return messages


class ToolRun(_Strict):
    name: str
    arguments: dict[str, Any] | str


class CompletionRequest(SamplingRequest):
    prompt: str | list[int]
    echo: bool = False
    logprobs: int | None = None


@dataclass
class Usage:
    """Token counts of one request (OpenAI's ``usage``), filled in as tokens are generated."""

    prompt: int
    completion: int = 0

    def dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
        }


async def guard_stream(items: AsyncIterator[tuple]) -> AsyncIterator[tuple | dict[str, Any]]:
    """Pass items through; an APIError mid-stream becomes one error-body item, because the
    200 status line has already been sent."""
    try:
        async for item in items:
            yield item
    except APIError as e:
        yield e.body()


def tool_call_object(call: ToolCall) -> dict[str, Any]:
    """A call as ``message.tool_calls[i]``: its arguments as a JSON string, as OpenAI sends them."""
    arguments = json.dumps(call.arguments, ensure_ascii=False)
    return {"id": call_id(), "type": "function", "function": {"name": call.name, "arguments": arguments}}


def tool_call_deltas(index: int, call: ToolCall) -> list[dict[str, Any]]:
    """A call streamed as OpenAI streams one: a delta with its id, type and name (empty arguments), then
    one with the arguments."""
    head = {"index": index, "id": call_id(), "type": "function", "function": {"name": call.name, "arguments": ""}}
    arguments = json.dumps(call.arguments, ensure_ascii=False)
    return [{"tool_calls": [head]}, {"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}]


def strip_control(text: str) -> str:
    """Remove turn-delimiting special tokens from message text. The tokenizer turns them into
    control ids wherever they appear, so a client could otherwise forge extra turns (e.g. a fake
    system message) inside its own message."""
    for token in CONTROL_TOKENS:
        text = text.replace(token, "")
    return text


def call_id() -> str:
    """A fresh id for a tool call in a response."""
    return f"call_{uuid.uuid4().hex[:24]}"


def sse(obj: dict[str, Any]) -> str:
    """One server-sent event carrying ``obj``."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
