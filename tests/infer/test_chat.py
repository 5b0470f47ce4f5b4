"""The terminal chat session: history trimming, reasoning display, tool calls fed back, line editing."""

from __future__ import annotations

import io
import os
import sys
import time

from weakwater.infer import SamplingParams
from weakwater.infer.chat import DIM, RESET, ChatSession, is_pretrain_model


def test_raw_mode_for_pretrained_models_or_tokenizers_without_a_template():
    assert is_pretrain_model({"stage": "pretrain"}, True) and not is_pretrain_model({}, True)
    assert is_pretrain_model({"extra": {"stage": "pretrain"}}, True)
    assert is_pretrain_model({}, has_chat_template=False)


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


def test_terminal_chat_has_line_editing_and_history():
    """Under a terminal, arrow keys edit the line (also between CJK characters) and recall earlier lines,
    instead of arriving as escape codes in the message."""
    import pty

    script = (
        "from weakwater.infer.chat import line_reader\n"
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
    from weakwater.tools import CALCULATOR

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
    from weakwater.tools import CALCULATOR

    bad = '<tool_call>\n{"name": "calculator", "arguments": "oops"}\n</tool_call>'
    monkeypatch.setattr(generator, "stream_text", lambda ids, params: iter([bad]))
    monkeypatch.setattr(generator.model.config, "max_seq_len", 1024)
    out = io.StringIO()
    session = ChatSession(generator, SamplingParams(), out=out, color=False, tools=[CALCULATOR])
    assert session.reply("q") == bad and bad in out.getvalue() and "[tool call]" not in out.getvalue()
    assert [m["role"] for m in session.history] == ["user", "assistant"]
