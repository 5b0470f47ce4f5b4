"""``weakwater chat`` and ``weakwater serve`` from the command line (one-shot, interactive, raw mode, int8,
tools end to end) and ``weakwater bench decode``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest

from weakwater.cli import main
from weakwater.infer import SamplingParams
from weakwater.infer.reasoning import split_reasoning


def test_one_shot_prompt_prints_the_greedy_reply(tiny_model_dir, generator, capsys):
    rc = main(
        [
            "chat",
            "--model",
            str(tiny_model_dir),
            "--prompt",
            "你好",
            "--temperature",
            "0",
            "--repetition-penalty",
            "1",
            "--max-new-tokens",
            "8",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    reply = generator.chat([{"role": "user", "content": "你好"}], SamplingParams(max_new_tokens=8))
    assert capsys.readouterr().out.strip() == split_reasoning(reply)[1]


def test_interactive_reset_and_exit(tiny_model_dir, monkeypatch, capsys):
    lines = iter(["hello", "/reset", "again", "/exit"])
    monkeypatch.setattr("builtins.input", lambda _prompt="": next(lines))
    rc = main(["chat", "--model", str(tiny_model_dir), "--max-new-tokens", "4", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "(history cleared)" in out


def test_pretrain_stage_selects_raw_mode(tiny_model_dir, generator, tmp_path, capsys):
    model_dir = tmp_path / "pretrained"
    shutil.copytree(tiny_model_dir, model_dir)
    meta = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**meta, "stage": "pretrain"}))
    flags = ["--prompt", "Once upon", "--max-new-tokens", "6", "--temperature", "0", "--repetition-penalty", "1"]
    main(["chat", "--model", str(model_dir), *flags, "--device", "cpu"])
    assert capsys.readouterr().out == generator.complete("Once upon", SamplingParams(max_new_tokens=6)) + "\n"


def test_int8_weights_flag_decodes_with_the_int8_engine(tiny_model_dir, generator, capsys):
    from weakwater.infer import Generator

    flags = ["--raw", "--prompt", "Once upon", "--max-new-tokens", "6", "--temperature", "0"]
    main(["chat", "--model", str(tiny_model_dir), *flags, "--repetition-penalty", "1", "--weights", "int8"])
    int8 = Generator(generator.model, generator.tokenizer, weights="int8")
    assert capsys.readouterr().out == int8.complete("Once upon", SamplingParams(max_new_tokens=6)) + "\n"


def test_bench_decode_writes_json_and_matches_hf(tmp_path, capsys):
    out = tmp_path / "decode.json"
    rc = main(
        [
            "bench",
            "decode",
            "--preset",
            "tiny",
            "--batch",
            "1",
            "2",
            "--tokens",
            "4",
            "--repeats",
            "1",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    result = json.loads(out.read_text())
    assert [r["batch"] for r in result["results"]] == [1, 2]
    for r in result["results"]:
        assert r["ours_tok_s"] > 0 and r["hf_tok_s"] > 0 and r["int8_tok_s"] > 0
        assert r["same_tokens"] == 1.0  # HF greedy on the same weights picks the same tokens
        assert 0 <= r["int8_agreement"] <= 1
    assert "int8 / HF" in capsys.readouterr().out


def test_bench_decode_on_a_saved_model(tiny_model_dir, capsys):
    flags = ["--batch", "1", "--tokens", "4", "--repeats", "1", "--no-hf"]
    assert main(["bench", "decode", "--model", str(tiny_model_dir), *flags]) == 0
    out = capsys.readouterr().out
    assert str(tiny_model_dir) in out and "ours int8 tok/s" in out and "HF" not in out


def test_serve_command_answers_on_loopback(tiny_model_dir, tmp_path):
    """``weakwater serve`` as a user runs it: a subprocess on a free port, API key from the env. The model
    id is the run's name (every run saves final/), each request gets one log line, /favicon.ico exists."""
    model_dir = tmp_path / "runs" / "my-sft" / "final"
    shutil.copytree(tiny_model_dir, model_dir)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "WEAKWATER_API_KEY": "k"}
    cmd = [sys.executable, "-m", "weakwater", "serve", "--model", str(model_dir), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer k"}, timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.5)
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "my-sft"
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).status_code == 401
        icon = httpx.get(f"http://127.0.0.1:{port}/favicon.ico", timeout=5)
        assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
        chat = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            headers={"Authorization": "Bearer k"},
            json={"model": "my-sft", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
            timeout=60,
        )
        assert chat.status_code == 200
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    log = [line for line in out.splitlines() if line.startswith('127.0.0.1 "')]
    assert len(log) == 4, out
    assert log[0].startswith('127.0.0.1 "GET /v1/models" 200 ') and log[1].startswith('127.0.0.1 "GET /v1/models" 401')
    assert log[2].startswith('127.0.0.1 "GET /favicon.ico" 200')
    completion = chat.json()["usage"]["completion_tokens"]
    assert log[3].startswith('127.0.0.1 "POST /v1/chat/completions" 200') and log[3].endswith(f"+{completion}")


def test_model_id_names_the_run():
    from weakwater.infer.cli import model_id

    assert model_id("runs/sft/final") == "sft" and model_id("runs/dpo/best") == "dpo"
    assert model_id("runs/pt/checkpoints/step_0000400") == "pt-step_0000400"
    assert model_id("models/minimind2-26m") == "minimind2-26m"


def test_serve_model_name_flag(tiny_model_dir):
    from weakwater.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", str(tiny_model_dir), "--model-name", "mine"])
    assert args.name == "mine"


@pytest.mark.slow
def test_chat_tools_command_end_to_end(tool_model_dir, capsys):
    """``weakwater chat --tools calculator`` with a model trained to call it: call, result, answer."""
    from tests.conftest import TOOL_QUESTIONS

    question, expression = next(iter(TOOL_QUESTIONS.items()))
    flags = ["--prompt", question, "--temperature", "0", "--no-color", "--tools", "calculator"]
    assert main(["chat", "--model", str(tool_model_dir), *flags]) == 0
    out = capsys.readouterr().out
    assert f'[tool call] -> calculator({{"expression": "{expression}"}})' in out
    assert "[tool result] <- 1003177" in out and out.rstrip().endswith("1003177.")
    assert main(["chat", "--model", str(tool_model_dir), "--prompt", "q", "--tools", "lookup"]) == 2
    assert "needs the world" in capsys.readouterr().err
