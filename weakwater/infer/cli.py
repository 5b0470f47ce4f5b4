"""``weakwater chat`` (terminal chat, :mod:`weakwater.infer.chat`) and ``weakwater serve`` (OpenAI-compatible
server + web chat, :mod:`weakwater.infer.server`): flags, model loading, the read-reply loop.

Raw mode (``--raw``) is chosen automatically when the model's config.json says ``"stage": "pretrain"`` or
its tokenizer has no chat template (``--chat`` forces chat mode).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

from weakwater.console import say
from weakwater.device import DEVICE_HELP, pick_device
from weakwater.infer.chat import ChatSession, is_pretrain_model, line_reader
from weakwater.infer.fast import WEIGHT_FORMATS
from weakwater.infer.generate import Generator
from weakwater.infer.sampling import SamplingParams
from weakwater.model.io import load_model, read_model_config
from weakwater.tokenizer import load_tokenizer
from weakwater.tools import find_world, resolve_tools


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
