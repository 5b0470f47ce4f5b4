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
