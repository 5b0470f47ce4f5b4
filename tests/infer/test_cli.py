"""``weakwater chat`` (one-shot, interactive, raw mode, history trimming, reasoning display) and
``weakwater bench decode``."""

from __future__ import annotations

import io
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
from weakwater.infer.cli import DIM, RESET, ChatSession, is_pretrain_model
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
    assert is_pretrain_model({"stage": "pretrain"}, True) and not is_pretrain_model({}, True)
    assert is_pretrain_model({}, has_chat_template=False)
    flags = ["--prompt", "Once upon", "--max-new-tokens", "6", "--temperature", "0", "--repetition-penalty", "1"]
    main(["chat", "--model", str(model_dir), *flags, "--device", "cpu"])
    assert capsys.readouterr().out == generator.complete("Once upon", SamplingParams(max_new_tokens=6)) + "\n"


def test_int8_weights_flag_decodes_with_the_int8_engine(tiny_model_dir, generator, capsys):
    from weakwater.infer import Generator

    flags = ["--raw", "--prompt", "Once upon", "--max-new-tokens", "6", "--temperature", "0"]
    main(["chat", "--model", str(tiny_model_dir), *flags, "--repetition-penalty", "1", "--weights", "int8"])
    int8 = Generator(generator.model, generator.tokenizer, weights="int8")
    assert capsys.readouterr().out == int8.complete("Once upon", SamplingParams(max_new_tokens=6)) + "\n"


def test_history_is_trimmed_to_the_context(generator):
    session = ChatSession(generator, SamplingParams(max_new_tokens=16), out=io.StringIO())
    for i in range(10):
        session.history += [{"role": "user", "content": f"question {i} " * 3}, {"role": "assistant", "content": "ok"}]
    ids = session.prompt_ids("last question")
    assert len(ids) + 16 <= generator.max_seq_len
    assert session.history and session.history[-2]["content"].startswith("question 9")
    assert len(session.history) < 20


def test_reasoning_is_dimmed_and_left_out_of_history(generator, monkeypatch):
    pieces = ["<thi", "nk>\nweigh", " options\n</th", "ink>\n<answer>", "42</answer>"]
    monkeypatch.setattr(generator, "stream_text", lambda ids, params: iter(pieces))
    out = io.StringIO()
    session = ChatSession(generator, SamplingParams(), out=out, color=True)
    assert session.reply("q") == "42"
    text = out.getvalue()
    assert text.index(DIM) < text.index("weigh options") < text.index(RESET) < text.index("42")
    assert session.history[-1] == {"role": "assistant", "content": "42"}
    plain = io.StringIO()
    ChatSession(generator, SamplingParams(), out=plain, color=False).reply("q")
    assert "[think] " in plain.getvalue() and "\033" not in plain.getvalue()


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


def test_terminal_chat_has_line_editing_and_history():
    """Under a terminal, arrow keys edit the line (also between CJK characters) and recall earlier lines,
    instead of arriving as escape codes in the message."""
    import pty

    script = (
        "from weakwater.infer.cli import line_reader\n"
        "read = line_reader()\n"
        "for _ in range(3):\n"
        "    print('GOT ' + repr(read('> ')), flush=True)\n"
    )
    pid, fd = pty.fork()
    if pid == 0:  # child: stdin/stdout are the pty
        os.execv(sys.executable, [sys.executable, "-c", script])
    left, up = b"\x1b[D", b"\x1b[A"
    keys = [b"abc" + left + b"X\r", "你好".encode() + left + b"Y\r", up + up + b"\r"]
    out = b""
    for k in keys:
        deadline = time.monotonic() + 60
        while out.count(b"> ") < keys.index(k) + 1 and time.monotonic() < deadline:
            out += os.read(fd, 4096)
        os.write(fd, k)
    deadline = time.monotonic() + 60
    while out.count(b"GOT ") < 3 and time.monotonic() < deadline:
        try:
            out += os.read(fd, 4096)
        except OSError:
            break
    os.waitpid(pid, 0)
    got = [line.split("GOT ", 1)[1] for line in out.decode("utf-8", "replace").splitlines() if "GOT " in line]
    assert got == ["'abXc'", "'你Y好'", "'abXc'"], out


def test_chat_tools_run_calls_and_feed_results_back(generator, monkeypatch):
    """A reply with a call (split over deltas): the call and its result are shown dimmed, the result goes back
    to the model as a tool turn, and the history holds the exchange as the chat template trains on it."""
    from weakwater.infer.tools import CALCULATOR

    call = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "347 * 2891"}}\n</tool_call>'
    replies = iter([["Let me", " compute.\n<tool_", call[6:40], call[40:]], ["1003177", "."]])
    prompts: list[str] = []

    def scripted(ids, params):
        prompts.append(generator.tokenizer.decode(ids))
        return iter(next(replies))

    monkeypatch.setattr(generator, "stream_text", scripted)
    monkeypatch.setattr(generator.model.config, "max_seq_len", 1024)  # room for the tools text (not decoded)
    out = io.StringIO()
    session = ChatSession(generator, SamplingParams(), out=out, color=True, tools=[CALCULATOR])
    assert session.reply("What is 347 * 2891?") == "1003177."
    assert '"name": "calculator"' in prompts[0] and "<tool_response>\n1003177\n</tool_response>" in prompts[1]
    text = out.getvalue()
    assert DIM + '-> calculator({"expression": "347 * 2891"})' + RESET in text
    assert DIM + "<- 1003177" + RESET in text and "<tool_call>" not in text
    assert [m["role"] for m in session.history] == ["user", "assistant", "tool", "assistant"]
    assert session.history[1]["content"] == "Let me compute."
    assert generator.tokenizer.render_chat(session._messages([])).count("<tool_call>\n{") == 2  # preamble + call


def test_chat_tools_malformed_call_is_shown_as_text(generator, monkeypatch):
    from weakwater.infer.tools import CALCULATOR

    bad = '<tool_call>\n{"name": "calculator", "arguments": "oops"}\n</tool_call>'
    monkeypatch.setattr(generator, "stream_text", lambda ids, params: iter([bad]))
    monkeypatch.setattr(generator.model.config, "max_seq_len", 1024)
    out = io.StringIO()
    session = ChatSession(generator, SamplingParams(), out=out, color=False, tools=[CALCULATOR])
    assert session.reply("q") == bad and bad in out.getvalue() and "[tool call]" not in out.getvalue()
    assert [m["role"] for m in session.history] == ["user", "assistant"]


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
