"""Console output of long-running commands: safe on dead pipes, messages that keep out of the progress bar.

Three problems this module exists for:

* ``weakwater pretrain ... 2>&1 | tee log``, then Ctrl-C: the terminal sends SIGINT to ``tee`` too, the
  next progress update hits a closed pipe and the BrokenPipeError killed the run before its checkpoint
  (the same happens under ``| head`` or a log collector that restarts). :func:`install` wraps stdout
  and stderr so that a write to a dead pipe turns the stream into a sink (its descriptor then points at
  /dev/null, so buffered data and the interpreter's final flush cannot fail either) and the work goes on:
  the checkpoint is written, the run's files say what happened, only the console is lost. SIGPIPE is
  ignored, so the error arrives as EPIPE rather than killing the process.
* A message printed while a tqdm bar is live lands in the middle of the bar's line. :func:`say` prints
  above the live bar (tqdm clears and redraws it).
* Under ``nohup``, a pipe or a CI log, a tqdm bar is hundreds of ``\\r`` redraws on one line.
  :class:`Progress` draws a bar on a terminal only; elsewhere it prints a plain line every
  ``WEAKWATER_PROGRESS_SECONDS`` (default 30) seconds and one when it closes.
  ``WEAKWATER_NO_PROGRESS=1`` turns both off.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time
from typing import Any, TextIO

_DEAD_PIPE = (errno.EPIPE, errno.EINVAL)  # EINVAL: what Windows reports for a closed pipe


class PipeSafeStream:
    """A text stream whose writes never raise because the reader went away (see the module docstring)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def _detach(self) -> None:
        """From now on the descriptor writes into /dev/null: nothing pending can fail again."""
        self.broken = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # no real descriptor (e.g. captured by a test)
            pass

    def write(self, text: str) -> int:
        if self.broken:
            return len(text)
        try:
            return self._stream.write(text)
        except OSError as e:
            if e.errno not in _DEAD_PIPE:
                raise
            self._detach()
            return len(text)

    def flush(self) -> None:
        if self.broken:
            return
        try:
            self._stream.flush()
        except OSError as e:
            if e.errno not in _DEAD_PIPE:
                raise
            self._detach()

    def isatty(self) -> bool:
        return not self.broken and self._stream.isatty()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, buffer, ... of the real stream
        return getattr(self._stream, name)


def install() -> None:
    """Make ``sys.stdout``/``sys.stderr`` pipe-safe and ignore SIGPIPE (idempotent; every command runs it)."""
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, PipeSafeStream):
            setattr(sys, name, PipeSafeStream(stream))


_active: list[Progress] = []


def say(message: str) -> None:
    """One message line on stderr, above a live progress bar rather than inside it."""
    bar = next((p._bar for p in reversed(_active) if p._bar is not None), None)
    if bar is not None:
        bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """A progress display: a tqdm bar on a terminal, plain periodic lines elsewhere (module docstring).

    ``update(n)``, ``set_postfix(**values)`` (shown after the count), ``reset_to(n)`` (e.g. a training
    rollback), ``close()``; also a context manager.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.postfix: dict[str, str] = {}
        enabled = os.environ.get("WEAKWATER_NO_PROGRESS") != "1"
        self._bar: Any = None
        self._plain = False
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)
        else:
            self._plain = enabled
        self.every = float(os.environ.get("WEAKWATER_PROGRESS_SECONDS", "30") or 30)
        self._start = self._last = time.monotonic()
        self._start_n = initial
        self._printed_n: int | None = None
        _active.append(self)

    def line(self) -> str:
        """``sft: 120/4500 steps (3%), 01:02 elapsed, ~37:48 left, loss=2.3100`` (the plain-mode line)."""
        elapsed = time.monotonic() - self._start
        done = self.n - self._start_n
        parts = [f"{self.desc}: {self.n:,}"]
        if self.total:
            parts[0] += f"/{self.total:,} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            parts[0] += f" {self.unit}"
        parts.append(f"{_clock(elapsed)} elapsed")
        if self.total and done > 0 and self.n < self.total:
            parts.append(f"~{_clock(elapsed / done * (self.total - self.n))} left")
        text = ", ".join(parts)
        if self.postfix:
            text += ", " + ", ".join(f"{k}={v}" for k, v in self.postfix.items())
        return text

    def _maybe_print(self, force: bool = False) -> None:
        if not self._plain:
            return
        now = time.monotonic()
        if force or now - self._last >= self.every:
            self._last = now
            self._printed_n = self.n
            print(self.line(), file=sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        self._maybe_print()

    def reset_to(self, n: int) -> None:
        self.n = n
        if self._bar is not None:
            self._bar.n = n
            self._bar.refresh()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = {k: str(v) for k, v in values.items()}
        if self._bar is not None:
            self._bar.set_postfix(self.postfix)

    def close(self) -> None:
        if self in _active:
            _active.remove(self)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._printed_n != self.n:
            self._maybe_print(force=True)
        self._plain = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
