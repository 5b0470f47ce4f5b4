"""Fixtures for inference tests: a tiny random model saved with the MiniMind tokenizer."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import uvicorn
from fastapi import FastAPI

from weakwater.infer import Generator
from weakwater.infer.server import ServerConfig, create_app
from weakwater.model import ModelConfig, Transformer, load_model, save_model
from weakwater.tokenizer import load_tokenizer

# Large init std makes logits peaky, so greedy choices are far from ties and do not flip with
# the rounding differences between batch shapes.
TINY = dict(vocab_size=6400, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=96, init_std=0.3)


@pytest.fixture(scope="session")
def tokenizer_dir(reference_dir: Path) -> Path:
    return reference_dir / "minimind_tokenizer"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**TINY))
    return save_model(model, tmp_path_factory.mktemp("infer") / "tiny", tokenizer_dir=tokenizer_dir)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir: Path):
    return load_tokenizer(tiny_model_dir)


API_KEY = "test-key-123"


@contextlib.contextmanager
def live_server(app) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="session")
def generator(tiny_model_dir: Path, tokenizer) -> Generator:
    return Generator(load_model(tiny_model_dir), tokenizer)


@pytest.fixture(scope="session")
def server(generator: Generator) -> Iterator[tuple[str, FastAPI]]:
    """A live server for the tiny model, guarded by ``API_KEY``: (base URL, app)."""
    app = create_app(generator, ServerConfig(model_name="tiny", api_key=API_KEY, max_batch=8))
    with live_server(app) as url:
        yield url, app


TOOL_QUESTIONS = {"What is 347 * 2891?": "347 * 2891", "Compute 56 × 78.": "56 * 78"}


@pytest.fixture(scope="session")
def tool_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model fine-tuned (our SFT stage) to call the calculator for two questions, then state its result:
    the real behaviour the tool-calling server paths need, from a model that fits in a test."""
    import json

    from weakwater.data.synth.tasks import tool_conversation
    from weakwater.infer.tools import CALCULATOR, calculate
    from weakwater.tokenizer.tokenizer import CHAT_TEMPLATE, _compile
    from weakwater.tokenizer.train import train_tokenizer
    from weakwater.train.stages.sft import SFTConfig, SFTStage
    from weakwater.train.trainer import Trainer

    out = tmp_path_factory.mktemp("toolbot")
    rows = []
    for question, expression in TOOL_QUESTIONS.items():
        result = calculate(expression)
        qa = type("QA", (), {"question": question, "reply": f"{result}."})
        conv = [
            {"role": "system", "content": "", "tools": [CALCULATOR.schema()]},
            *tool_conversation(qa, expression, result),
        ]
        rows.append({"conversations": conv})
    (out / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 8))
    text = [_compile(CHAT_TEMPLATE).render(messages=r["conversations"], tools=None) for r in rows]
    (out / "text.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in text * 20))
    train_tokenizer([out / "text.jsonl"], out / "tok", vocab_size=1000)
    tok = load_tokenizer(out / "tok")
    torch.manual_seed(0)
    shape = dict(vocab_size=tok.vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=320)
    init = save_model(Transformer(ModelConfig(**shape)), out / "init", tokenizer_dir=out / "tok")
    cfg = SFTConfig(data=str(out / "sft.jsonl"), init=str(init), out=str(out / "run"), max_steps=120, lr=3e-3,
                    warmup_steps=5, batch_size=4, seq_len=319, eval_every=0, save_every=0, log_every=50,
                    device="cpu")  # fmt: skip
    return Trainer(cfg, SFTStage(cfg, tok), tokenizer=tok).fit()


@pytest.fixture(scope="session")
def tool_generator(tool_model_dir: Path) -> Generator:
    return Generator(load_model(tool_model_dir), load_tokenizer(tool_model_dir))
