"""Fixtures for inference tests: a tiny random model saved with the MiniMind tokenizer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi import FastAPI

from weakwater.infer import Generator
from weakwater.infer.server import ServerConfig, create_app, serve_in_thread
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


live_server = serve_in_thread  # tests import it from here


@pytest.fixture(scope="session")
def generator(tiny_model_dir: Path, tokenizer) -> Generator:
    return Generator(load_model(tiny_model_dir), tokenizer)


@pytest.fixture(scope="session")
def server(generator: Generator) -> Iterator[tuple[str, FastAPI]]:
    """A live server for the tiny model, guarded by ``API_KEY``: (base URL, app)."""
    app = create_app(generator, ServerConfig(model_name="tiny", api_key=API_KEY, max_batch=8))
    with live_server(app) as url:
        yield url, app
