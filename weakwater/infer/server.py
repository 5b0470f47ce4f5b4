"""An OpenAI-compatible HTTP API and a browser chat page for one saved model.

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` (both
with SSE streaming), ``GET /`` (the web chat). Reasoning inside ``<think>`` goes to
``reasoning_content`` (DeepSeek's convention), the answer to ``content`` without ``<answer>`` tags.

Tools follow OpenAI: ``tools`` (function schemas) are rendered into the prompt by the chat template;
the model's ``<tool_call>`` blocks come back as ``message.tool_calls`` (``id``, ``type``,
``function.name``, ``function.arguments`` as a JSON string) with ``finish_reason: "tool_calls"``;
streamed, each call is one delta ``tool_calls[{index, id, type, function: {name, arguments: ""}}]``
then its ``arguments``. ``tool_choice``: ``auto`` (default with tools), ``none`` (tools left out of
the prompt, nothing parsed), ``required`` (the reply is begun with ``<tool_call>``) or
``{"type": "function", "function": {"name": ...}}`` (begun with that call's name). A call the model
writes badly (not JSON, an unknown tool, arguments not an object, cut off) is returned as text in
``content``, never an error. ``GET /v1/tools`` lists and ``POST /v1/tools/call`` runs the tools the
server was started with (``serve --tools``), for the web chat.

Every bad request gets a 4xx with OpenAI's error body ``{"error": {message, type, param, code}}``.
``max_tokens`` larger than what fits in the context is clamped (the response then ends with
``finish_reason: "length"``); a prompt that leaves no room at all is a 400
``context_length_exceeded``.

Security: the server binds 127.0.0.1 unless told otherwise. On loopback it also rejects requests
whose Host header is not a loopback name (blocks DNS-rebinding pages from driving it), POST
bodies must be JSON with a Content-Length under ``max_body_bytes`` (a cross-site form cannot send
that without a CORS preflight, which is never granted), and ``api_key`` (Bearer) guards /v1/* when
set. It is not hardened for the open internet: put it behind a TLS proxy with its own limits.

The request and response shapes (schemas, error body, tool-call objects, stream chunks) are in
:mod:`weakwater.infer.openai_api`; this module holds the app, its checks and the generation flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from weakwater.data.chat import ConversationError, to_messages
from weakwater.infer.generate import Generator, StepEvent, TextStream, end_token_ids
from weakwater.infer.openai_api import (
    APIError,
    ChatRequest,
    CompletionRequest,
    NamedToolChoice,
    SamplingRequest,
    ToolRun,
    Usage,
    guard_stream,
    sse,
    tool_call_deltas,
    tool_call_object,
)
from weakwater.infer.reasoning import ReasoningSplitter, prompt_opens_think
from weakwater.infer.sampling import SamplingParams
from weakwater.infer.scheduler import Job, QueueFullError, Scheduler
from weakwater.tools import CALL_OPEN, CallStream, Tool, call_text, parse_call, parse_calls

WEB_DIR = Path(__file__).resolve().parent / "web"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass
class ServerConfig:
    model_name: str
    api_key: str | None = None
    loopback_only_hosts: bool = True
    max_body_bytes: int = 1 << 20
    max_batch: int = 8
    max_queue: int = 256
    log: Callable[[str], None] | None = None  # one line per request (serve: stderr)
    tools: list[Tool] | None = None  # tools the web chat may offer and run (``serve --tools``)


def create_app(generator: Generator, config: ServerConfig) -> FastAPI:
    """The FastAPI app; its scheduler thread starts now and stops with the app's lifespan."""
    if generator.tokenizer is None:
        raise ValueError("the server needs a model with its tokenizer")
    scheduler = Scheduler(generator, max_batch=config.max_batch, max_queue=config.max_queue)
    app = FastAPI(title="WeakWater", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.scheduler = scheduler
    app.router.add_event_handler("shutdown", scheduler.close)
    api = _Api(generator, scheduler, config)

    @app.middleware("http")
    async def guard(request: Request, call_next):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            _check_request(request, config)
        except APIError as e:
            response: Response = e.response()
        else:
            response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        if config.log is not None:
            _log_when_sent(request, response, start, config.log)
        return response

    @app.exception_handler(APIError)
    async def api_error(_: Request, e: APIError) -> JSONResponse:
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid":
            return APIError(400, "request body is not valid JSON", code="invalid_json").response()
        where = ".".join(loc) or None
        message = f"{where}: {first.get('msg', 'invalid value')}" if where else first.get("msg", "invalid request")
        return APIError(400, message, param=where).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return APIError(e.status_code, str(e.detail), type=kind).response()

    @app.exception_handler(Exception)
    async def internal_error(_: Request, e: Exception) -> JSONResponse:
        return APIError(500, f"internal error: {type(e).__name__}", type="server_error").response()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [api.model_card()]}

    @app.get("/v1/models/{name}")
    async def model(name: str) -> dict[str, Any]:
        api.check_model(name)
        return api.model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request) -> Response:
        return await api.chat(body, request.state)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await api.complete(body, request.state)

    @app.get("/v1/tools")
    async def list_tools() -> dict[str, Any]:
        return {"object": "list", "data": [t.schema() for t in config.tools or []]}

    @app.post("/v1/tools/call")
    async def call_tool(body: ToolRun) -> dict[str, Any]:
        return api.run_tool(body)

    @app.get("/")
    async def index() -> FileResponse:
        return _static("index.html")

    @app.get("/static/{name}")
    async def static(name: str) -> FileResponse:
        return _static(name)

    @app.get("/favicon.ico")
    async def favicon() -> FileResponse:  # browsers ask for it on every page
        return _static("favicon.svg")

    return app


def _log_when_sent(request: Request, response: Response, start: float, log: Callable[[str], None]) -> None:
    """One line per request once its last byte is sent (a stream's end, not its first chunk): client,
    method, path, status, seconds, and the token counts of a generation."""

    def line() -> str:
        client = request.client.host if request.client else "-"
        usage = getattr(request.state, "usage", None)
        tokens = f" tokens {usage.prompt}+{usage.completion}" if usage is not None else ""
        seconds = time.perf_counter() - start
        return f'{client} "{request.method} {request.url.path}" {response.status_code} {seconds:.2f}s{tokens}'

    body = getattr(response, "body_iterator", None)
    if body is None:
        log(line())
        return

    async def logged() -> AsyncIterator[Any]:
        try:
            async for chunk in body:
                yield chunk
        finally:
            log(line())

    response.body_iterator = logged()  # type: ignore[attr-defined]


def _static(name: str) -> FileResponse:
    """Only the files shipped in web/ (no path components), with a strict CSP."""
    allowed = {p.name: p for p in WEB_DIR.iterdir() if p.is_file()}
    if name not in allowed:
        raise APIError(404, f"no such file: {name}", type="not_found_error")
    return FileResponse(allowed[name], headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})


def _check_request(request: Request, config: ServerConfig) -> None:
    """Host, body and key checks done before any parsing."""
    if config.loopback_only_hosts:
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name not in LOOPBACK_HOSTS:
            raise APIError(400, f"Host {host!r} not allowed: this server only answers loopback names", param="host")
    if request.method == "POST":
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            raise APIError(411, "a Content-Length header is required", code="length_required")
        if int(length) > config.max_body_bytes:
            raise APIError(413, f"request body over {config.max_body_bytes} bytes", code="body_too_large")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise APIError(415, "Content-Type must be application/json", code="unsupported_media_type")
    if config.api_key and request.url.path.startswith("/v1/"):
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode(), config.api_key.encode()):
            raise APIError(401, "Incorrect or missing API key (send Authorization: Bearer KEY)", code="invalid_api_key")


class _Api:
    def __init__(self, generator: Generator, scheduler: Scheduler, config: ServerConfig) -> None:
        self.gen, self.scheduler, self.config = generator, scheduler, config
        self.tok = generator.tokenizer
        self.created = int(time.time())

    def model_card(self) -> dict[str, Any]:
        return {"id": self.config.model_name, "object": "model", "created": self.created, "owned_by": "weakwater"}

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.config.model_name:
            raise APIError(
                404,
                f"The model {name!r} does not exist; this server serves {self.config.model_name!r}",
                param="model",
                code="model_not_found",
            )

    def params(
        self, body: SamplingRequest, prompt_len: int, stop_ids: tuple[int, ...], max_tokens: int | None
    ) -> SamplingParams:
        room = self.gen.max_seq_len - prompt_len
        if room < 1:
            raise APIError(
                400,
                f"This model's maximum context length is {self.gen.max_seq_len} tokens; the prompt has "
                f"{prompt_len} tokens and leaves no room for an answer",
                param="messages" if isinstance(body, ChatRequest) else "prompt",
                code="context_length_exceeded",
            )
        seed = None if body.seed is None else body.seed % (1 << 63)
        return SamplingParams(
            max_new_tokens=min(max_tokens or room, room),
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=body.top_k or 0,
            repetition_penalty=body.repetition_penalty or 1.0,
            stop_token_ids=stop_ids,
            stop=body.stop_strings(),
            seed=seed,
        )

    def submit(self, prompt: list[int], params: SamplingParams) -> tuple[Job, asyncio.Queue]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[StepEvent | Exception] = asyncio.Queue()

        def emit(event: StepEvent | Exception) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        job = Job(prompt, params, emit)
        try:
            self.scheduler.submit(job)
        except QueueFullError as e:
            raise APIError(429, str(e), type="rate_limit_error", code="server_busy") from e
        return job, events

    async def _events(self, job: Job, events: asyncio.Queue) -> AsyncIterator[StepEvent]:
        """The job's events; cancels the job if the consumer stops early. A streaming response
        stops (and so cancels) when a send to a departed client fails; a non-streaming request
        runs to its end, which ``max_tokens`` and the context bound (uvicorn does not report a
        disconnect before the response starts)."""
        try:
            while True:
                event = await events.get()
                if isinstance(event, ValueError):  # the engine refused this prompt
                    raise APIError(400, str(event), param="prompt")
                if isinstance(event, Exception):
                    raise APIError(500, f"generation failed: {type(event).__name__}", type="server_error")
                yield event
                if event.finish_reason is not None:
                    return
        finally:
            job.cancelled.set()

    # ----- /v1/chat/completions -----

    def _chat_prompt(self, body: ChatRequest) -> tuple[str, list[str] | None, str]:
        """(prompt text, the tool names whose calls to read back or None, the text the reply is begun with).

        Conversations that involve tools are validated as training data is (``weakwater.data.chat``), so a
        bad one is a 400 naming the field, e.g. ``messages[3].role`` for a tool result with no call before.
        """
        messages = body.conversation()
        tools = [t.model_dump(exclude_none=True) for t in body.tools or []]
        names = [t["function"]["name"] for t in tools]
        if len(set(names)) != len(names):
            raise APIError(400, "tools: two functions share a name", param="tools")
        choice = body.tool_choice or ("auto" if tools else "none")
        if choice != "none" and not tools:
            raise APIError(400, "tool_choice needs a non-empty tools list", param="tool_choice")
        named = choice.function.name if isinstance(choice, NamedToolChoice) else None
        if named is not None and named not in names:
            raise APIError(400, f"tool_choice names {named!r}, which is not in tools", param="tool_choice")
        if tools or any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
            if not self.tok.supports_tools:
                raise APIError(400, "this model's chat template cannot render tools", param="tools")
            try:
                chat = to_messages({"messages": messages, "tools": tools or None}, prompt=True)
            except ConversationError as e:
                raise APIError(400, f"{e.field}: {e.reason}", param=e.field) from e
            if choice == "none" and tools:  # the history keeps its calls; the prompt offers no tools
                added = chat[0]["role"] == "system" and messages[0]["role"] != "system"
                chat = chat[1:] if added else [{k: v for k, v in chat[0].items() if k != "tools"}, *chat[1:]]
            messages = chat
        try:
            prompt_text = self.tok.render_chat(messages, add_generation_prompt=True)
        except Exception as e:  # template errors (e.g. roles in an order it refuses) are the client's
            raise APIError(
                400, f"cannot render these messages with the model's chat template: {e}", param="messages"
            ) from e
        # required / named: the reply is begun for the model, which only writes what follows. The forced text
        # ends where the tokenizer cuts the same text in training (after the special token, after '":'), so
        # the model continues from token boundaries it has seen.
        prefix = ""
        if named is not None:
            prefix = CALL_OPEN + '\n{"name": ' + json.dumps(named, ensure_ascii=False) + ', "arguments":'
        elif choice == "required":
            prefix = CALL_OPEN
        return prompt_text + prefix, (names if choice != "none" else None), prefix

    async def chat(self, body: ChatRequest, state: Any = None) -> Response:
        self.check_model(body.model)
        prompt_text, tool_names, prefix = self._chat_prompt(body)
        prompt = self.tok.encode(prompt_text)
        params = self.params(body, len(prompt), end_token_ids(self.tok), body.max_completion_tokens or body.max_tokens)
        job, events = self.submit(prompt, params)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        base = {"id": rid, "created": created, "model": self.config.model_name, "system_fingerprint": None}
        text = TextStream(self._decode, params.stop)
        split = ReasoningSplitter(in_think=prompt_opens_think(prompt_text) and not prefix)
        usage = Usage(len(prompt))
        if state is not None:  # for the request's log line
            state.usage = usage
        one_call = body.parallel_tool_calls is False

        async def deltas() -> AsyncIterator[tuple[str, str, str | None]]:
            async for ev in self._events(job, events):
                if ev.token is not None:
                    usage.completion += 1
                    r, c = split.push(text.push(ev.token))
                    if r or c:
                        yield r, c, None
                if ev.finish_reason is not None:
                    r1, c1 = split.push(text.finish())
                    r2, c2 = split.finish()
                    yield r1 + r2, c1 + c2, ev.finish_reason

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            calls_in = CallStream() if tool_names is not None else None
            n_calls = 0

            def content_deltas(c: str, final: bool) -> list[dict[str, Any]]:
                """Content text as it comes; each tool call once it is complete and well-formed (else as text)."""
                nonlocal n_calls
                if calls_in is None:
                    return [{"content": c}] if c else []
                out: list[dict[str, Any]] = []
                for kind, piece in calls_in.push(c) + (calls_in.finish() if final else []):
                    call = parse_call(piece, tool_names) if kind == "call" else None
                    if call is None:
                        piece = call_text(piece) if kind == "call" else piece
                        out += [{"content": piece}] if piece else []
                    elif not (one_call and n_calls):
                        out += tool_call_deltas(n_calls, call)
                        n_calls += 1
                return out

            if calls_in is not None:
                calls_in.push(prefix)  # the forced beginning of a call: nothing to send yet

            async def chat_sse() -> AsyncIterator[str]:
                chunk = {**base, "object": "chat.completion.chunk"}

                def event(delta: dict[str, Any], finish: str | None = None) -> str:
                    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                    return sse({**chunk, "choices": [choice]})

                yield event({"role": "assistant", "content": ""})
                async for item in guard_stream(deltas()):
                    if isinstance(item, dict):  # an error raised mid-stream
                        yield sse(item)
                        break
                    r, c, finish = item
                    if r:
                        yield event({"reasoning_content": r})
                    for delta in content_deltas(c, final=finish is not None):
                        yield event(delta)
                    if finish:
                        yield event({}, "tool_calls" if n_calls else finish)
                        if include_usage:
                            yield sse({**chunk, "choices": [], "usage": usage.dict()})
                yield "data: [DONE]\n\n"

            return _stream_response(job, chat_sse())

        reasoning, content, finish = [], [prefix], "stop"
        async for r, c, f in deltas():
            reasoning.append(r)
            content.append(c)
            finish = f or finish
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(content).strip(),
            "reasoning_content": "".join(reasoning).strip() or None,
        }
        if tool_names is not None:
            parsed = parse_calls(message["content"], tool_names)
            calls = parsed.calls[:1] if one_call else parsed.calls
            if calls:
                message["content"] = parsed.content or None
                message["tool_calls"] = [tool_call_object(c) for c in calls]
                finish = "tool_calls"
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        return JSONResponse({**base, "object": "chat.completion", "choices": [choice], "usage": usage.dict()})

    def run_tool(self, body: ToolRun) -> dict[str, Any]:
        """Run one of the server's own tools (the web chat's tool loop); its refusals are results, not errors."""
        tools = {t.name: t for t in self.config.tools or []}
        if body.name not in tools:
            raise APIError(404, f"no tool named {body.name!r} on this server", param="name", code="tool_not_found")
        arguments = body.arguments
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except json.JSONDecodeError as e:
                raise APIError(400, f"arguments: not valid JSON ({e.msg})", param="arguments") from e
        if not isinstance(arguments, dict):
            raise APIError(400, "arguments: expected a JSON object", param="arguments")
        return {"name": body.name, "content": tools[body.name].run(arguments)}

    # ----- /v1/completions -----

    async def complete(self, body: CompletionRequest, state: Any = None) -> Response:
        self.check_model(body.model)
        if body.echo or body.logprobs:
            raise APIError(400, "echo and logprobs are not supported", param="echo" if body.echo else "logprobs")
        if isinstance(body.prompt, list):
            vocab = self.gen.model.config.vocab_size
            if not body.prompt or any(not 0 <= t < vocab for t in body.prompt):
                raise APIError(400, f"prompt token ids must be a non-empty list in 0..{vocab - 1}", param="prompt")
            prompt = list(body.prompt)
        else:
            prompt = self.tok.encode(body.prompt)
            if not prompt:
                raise APIError(400, "prompt is empty", param="prompt")
        params = self.params(body, len(prompt), end_token_ids(self.tok), body.max_tokens or 16)
        job, events = self.submit(prompt, params)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        base = {"id": rid, "object": "text_completion", "created": created, "model": self.config.model_name}
        text = TextStream(self._decode, params.stop)
        usage = Usage(len(prompt))
        if state is not None:  # for the request's log line
            state.usage = usage

        async def deltas() -> AsyncIterator[tuple[str, str | None]]:
            async for ev in self._events(job, events):
                delta = ""
                if ev.token is not None:
                    usage.completion += 1
                    delta = text.push(ev.token)
                if ev.finish_reason is not None:
                    delta += text.finish()
                if delta or ev.finish_reason:
                    yield delta, ev.finish_reason

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            async def completion_sse() -> AsyncIterator[str]:
                async for item in guard_stream(deltas()):
                    if isinstance(item, dict):
                        yield sse(item)
                        break
                    delta, finish = item
                    choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish}
                    yield sse({**base, "choices": [choice]})
                    if finish and include_usage:
                        yield sse({**base, "choices": [], "usage": usage.dict()})
                yield "data: [DONE]\n\n"

            return _stream_response(job, completion_sse())

        parts, finish = [], "stop"
        async for delta, f in deltas():
            parts.append(delta)
            finish = f or finish
        choice = {"index": 0, "text": "".join(parts), "logprobs": None, "finish_reason": finish}
        return JSONResponse({**base, "choices": [choice], "usage": usage.dict()})

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)


def _stream_response(job: Job, lines: AsyncIterator[str]) -> StreamingResponse:
    """An SSE response that frees the job's slot as soon as the stream ends or the client goes away."""

    async def body() -> AsyncIterator[str]:
        try:
            async for line in lines:
                yield line
        finally:
            job.cancelled.set()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, timeout: float = 60.0) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a daemon thread; yields its base URL.

    For in-process clients (the demo's OpenAI-API check, tests); ``weakwater serve`` runs uvicorn itself.
    """
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
