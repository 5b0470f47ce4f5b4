"""``weakwater chat`` (terminal chat) and ``weakwater serve`` (OpenAI-compatible server + web chat).

Chat mode renders the conversation with the model's chat template and stops at ``<|im_end|>``.
With ``--tools`` the model may call tools (the built-in calculator and demo-world lookup, or functions of
a Python file): each call and its result is shown dimmed and fed back until the model answers.
Raw mode (``--raw``) continues plain text, for pretrained models that never saw a chat template;
it is chosen automatically when the model's config.json says ``"stage": "pretrain"`` or its
tokenizer has no chat template (``--chat`` forces chat mode).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from weakwater.console import say
from weakwater.device import DEVICE_HELP, pick_device
from weakwater.infer.fast import WEIGHT_FORMATS
from weakwater.infer.generate import Generator
from weakwater.infer.reasoning import ReasoningSplitter, prompt_opens_think
from weakwater.infer.sampling import SamplingParams
from weakwater.infer.tools import CallStream, Tool, call_text, find_world, parse_call, resolve_tools
from weakwater.model.io import load_model, read_model_config
from weakwater.tokenizer import load_tokenizer

DIM, RESET = "\033[2m", "\033[0m"
MAX_TOOL_ROUNDS = 4  # calls answered per user message before the model must reply in text


def register(sub: argparse._SubParsersAction) -> None:
    chat = sub.add_parser(
        "chat",
        help="talk to a saved model in the terminal (streamed; /reset, /exit)",
        description="Chat with a saved model in the terminal, replies streamed as they are generated. Chat mode "
        "renders the conversation with the model's chat template and ends a reply at its end-of-turn token. "
        "--raw continues plain text, for pretrained models that never saw a chat template; it is chosen "
        "automatically for a pretrain-stage model or a tokenizer without a chat template (--chat forces chat "
        "mode). Arrow keys edit the line and recall earlier messages; /reset clears the history, /exit quits.",
    )
    chat.add_argument("--model", metavar="DIR", required=True, help="a saved model directory")
    chat.add_argument("--prompt", help="answer this one message and exit (one-shot mode)")
    mode = chat.add_mutually_exclusive_group()
    mode.add_argument("--raw", action="store_true", help="plain text continuation (pretrained models)")
    mode.add_argument("--chat", action="store_true", help="force chat mode even for a pretrain-stage model")
    chat.add_argument("--system", help="a system message put before the conversation")
    chat.add_argument("--no-color", action="store_true", help="mark reasoning with [think] instead of dimming it")
    _tool_flags(chat, "the model may call")
    _sampling_flags(chat, temperature=0.7, top_p=0.9, repetition_penalty=1.05, max_new_tokens=256)
    _runtime_flags(chat)
    chat.set_defaults(func=run_chat)

    serve = sub.add_parser(
        "serve",
        help="OpenAI-compatible HTTP API and web chat for a saved model",
        description="Serve /v1/models, /v1/chat/completions, /v1/completions and a web chat at /. "
        "Binds 127.0.0.1: only this machine can connect. Binding another address (e.g. 0.0.0.0) lets "
        "anyone who can reach it use the model and this machine's CPU/GPU; then set --api-key and "
        "put a TLS reverse proxy in front.",
    )
    serve.add_argument("--model", metavar="DIR", required=True, help="a saved model directory")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    serve.add_argument(
        "--api-key",
        default=os.environ.get("WEAKWATER_API_KEY"),
        help="require 'Authorization: Bearer KEY' on /v1/* (default: $WEAKWATER_API_KEY; unset: no key)",
    )
    serve.add_argument(
        "--model-name",
        "--name",
        dest="name",
        help="model id clients see and send (default: the run's name, e.g. sft for runs/sft/final)",
    )
    serve.add_argument("--max-batch", type=int, default=8, help="requests decoded together (default: 8)")
    serve.add_argument("--max-queue", type=int, default=256, help="waiting requests before 429 (default: 256)")
    _tool_flags(
        serve,
        "the web chat may offer the model and run here (GET /v1/tools, POST /v1/tools/call; API "
        "clients send and run their own)",
    )
    _runtime_flags(serve)
    serve.set_defaults(func=run_serve)


def _tool_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--tools",
        metavar="SPEC",
        help=f"tools {what}, comma-separated: builtin (= calculator + lookup), calculator, lookup (the demo "
        "world's facts), or a Python file whose TOOLS list names its functions (it is run!)",
    )
    p.add_argument("--world", metavar="FILE", help="world.json for lookup (default: the demo's, beside the model)")


def _runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument(
        "--weights",
        choices=WEIGHT_FORMATS,
        default="fp32",
        help="decode with fp32 weights (exact, default) or int8 ones (CPU only; 3-4x faster "
        "than fp32 for 26m-size and larger models, logits about 2%% off)",
    )


def _sampling_flags(p: argparse.ArgumentParser, **defaults: Any) -> None:
    p.add_argument("--max-new-tokens", type=int, default=defaults["max_new_tokens"], help="tokens per reply")
    p.add_argument("--temperature", type=float, default=defaults["temperature"], help="0 = greedy")
    p.add_argument("--top-p", type=float, default=defaults["top_p"], help="nucleus sampling mass")
    p.add_argument("--top-k", type=int, default=0, help="keep only the k most likely tokens (0: off)")
    p.add_argument(
        "--repetition-penalty", type=float, default=defaults["repetition_penalty"], help="> 1 discourages repeats"
    )
    p.add_argument("--seed", type=int, help="seed for reproducible sampling")


def load_generator(model_dir: str, device: str, weights: str = "fp32") -> tuple[Generator, dict[str, Any]]:
    """Model + tokenizer from a saved model directory (on the ``--device`` it names), and its metadata."""
    _, meta = read_model_config(model_dir)
    device = pick_device(device)
    model = load_model(model_dir, device=device)
    return Generator(model, load_tokenizer(model_dir), device=device, weights=weights), meta


def is_pretrain_model(meta: dict[str, Any], has_chat_template: bool) -> bool:
    extra = meta.get("extra") if isinstance(meta.get("extra"), dict) else {}
    return meta.get("stage") == "pretrain" or extra.get("stage") == "pretrain" or not has_chat_template


def run_chat(args: argparse.Namespace) -> int:
    gen, meta = load_generator(args.model, args.device, args.weights)
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
    has_template = getattr(gen.tokenizer, "chat_template", True) is not None
    raw = args.raw or (not args.chat and is_pretrain_model(meta, has_template))
    color = not args.no_color and sys.stdout.isatty()
    tools = None
    if args.tools:
        if raw:
            raise ValueError("--tools needs chat mode (a model trained on the chat template)")
        tools = resolve_tools(args.tools, args.world or find_world(args.model))
    session = ChatSession(gen, params, raw=raw, system=args.system, color=color, tools=tools)
    if args.prompt is not None:
        session.reply(args.prompt)
        return 0
    mode = "raw continuation" if raw else "chat" + (f", tools: {', '.join(t.name for t in tools)}" if tools else "")
    print(f"weakwater chat ({mode}, context {gen.max_seq_len} tokens). /reset clears history, /exit quits.")
    read_line = line_reader()
    while True:
        print()
        try:
            line = read_line("> ")
        except EOFError:
            print()
            return 0
        command = line.strip()
        if command in ("/exit", "/quit"):
            return 0
        if command == "/reset":
            session.reset()
            print("(history cleared)")
            continue
        if command:
            session.reply(line)


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


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from weakwater.infer.server import ServerConfig, create_app

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be 1..65535, got {args.port}")
    gen, _ = load_generator(args.model, args.device, args.weights)
    loopback = _is_loopback(args.host)
    if not loopback:
        say(
            f"warning: binding {args.host}: anyone who can reach this address can use the model"
            + ("" if args.api_key else " (no --api-key set!)")
        )
    config = ServerConfig(
        model_name=args.name or model_id(args.model),
        api_key=args.api_key,
        loopback_only_hosts=loopback,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        log=say,
        tools=resolve_tools(args.tools, args.world or find_world(args.model)) if args.tools else None,
    )
    app = create_app(gen, config)
    print(f"serving {config.model_name!r} on http://{args.host}:{args.port}/ (OpenAI API under /v1)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


# Directory names the trainer gives every run's models: they say nothing about which model it is.
RUN_SUBDIRS = ("final", "best", "adapter")


def model_id(model_dir: str | Path) -> str:
    """A meaningful id for a saved model: ``runs/sft/final`` -> ``sft``, ``models/minimind2`` -> ``minimind2``,
    ``runs/pt/checkpoints/step_0000400`` -> ``pt-step_0000400``."""
    path = Path(model_dir).resolve()
    if path.name in RUN_SUBDIRS and path.parent.name:
        return path.parent.name
    if path.parent.name == "checkpoints" and path.parent.parent.name:
        return f"{path.parent.parent.name}-{path.name}"
    return path.name or "model"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
