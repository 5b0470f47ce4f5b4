"""Console output: dead pipes never kill a run, messages keep out of the bar, plain lines off a terminal."""

from __future__ import annotations

import io

import pytest

from weakwater import console


class DeadPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_pipe_safe_stream_swallows_a_dead_pipe_and_becomes_a_sink():
    stream = console.PipeSafeStream(DeadPipe())
    assert stream.write("hello") == 5 and stream.broken
    stream.write("more")
    stream.flush()
    assert not stream.isatty()


def test_other_os_errors_still_raise():
    class Full(io.StringIO):
        def write(self, text):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        console.PipeSafeStream(Full()).write("x")


def test_plain_progress_lines_off_a_terminal(monkeypatch, capsys):
    """Not a TTY: no carriage-return redraws, one plain line per period and one at the end."""
    monkeypatch.delenv("WEAKWATER_NO_PROGRESS", raising=False)
    monkeypatch.setenv("WEAKWATER_PROGRESS_SECONDS", "0")
    with console.Progress(4, "eval ppl", unit="docs") as bar:
        for _ in range(4):
            bar.update()
            bar.set_postfix(loss="2.5000")
        console.say("a message")
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0].startswith("eval ppl: 1/4 docs (25%), 00:00 elapsed")
    assert lines[-2].startswith("eval ppl: 4/4 docs (100%)") and lines[-2].endswith("loss=2.5000")
    assert lines[-1] == "a message"


def test_say_prints_above_a_live_bar(monkeypatch):
    """On a terminal a message must not land inside the bar's line: tqdm clears the bar, prints, redraws."""
    written = []

    class Bar:
        def write(self, message, file=None):
            written.append(message)

    progress = console.Progress.__new__(console.Progress)
    progress._bar = Bar()
    console._active.append(progress)
    try:
        console.say("validation loss 2.3")
    finally:
        console._active.remove(progress)
    assert written == ["validation loss 2.3"]
