"""The scheduler thread: continuous batching, cancellation and error isolation."""

from __future__ import annotations

import queue
import threading

import pytest

from weakwater.infer import SamplingParams
from weakwater.infer.generate import StepEvent
from weakwater.infer.scheduler import Job, QueueFullError, Scheduler


class Recorder:
    """Collects events of all jobs in arrival order."""

    def __init__(self) -> None:
        self.log: queue.Queue[tuple[str, StepEvent | Exception]] = queue.Queue()

    def job(self, name: str, prompt: list[int], params: SamplingParams) -> Job:
        return Job(prompt, params, lambda ev: self.log.put((name, ev)))

    def until_done(self, names: set[str]) -> list[tuple[str, StepEvent | Exception]]:
        seen, done = [], set()
        while done != names:
            name, ev = self.log.get(timeout=60)
            seen.append((name, ev))
            if isinstance(ev, Exception) or ev.finish_reason is not None:
                done.add(name)
        return seen


@pytest.fixture
def scheduler(generator):
    s = Scheduler(generator, max_batch=4)
    yield s
    s.close()


def test_a_short_job_joins_and_finishes_before_a_running_long_one(scheduler, generator):
    rec = Recorder()
    short = rec.job("short", [1, 2, 3], SamplingParams(max_new_tokens=2))
    started = threading.Event()

    def long_emit(ev):
        rec.log.put(("long", ev))
        if not started.is_set():
            started.set()
            scheduler.submit(short)  # arrives while "long" is being decoded

    scheduler.submit(Job([5, 6, 7], SamplingParams(max_new_tokens=60), long_emit))
    events = rec.until_done({"long", "short"})
    finished = [name for name, ev in events if ev.finish_reason is not None]
    assert finished == ["short", "long"]
    tokens = {n: [ev.token for m, ev in events if m == n and ev.token is not None] for n in ("long", "short")}
    assert tokens["short"] == generator.generate([[1, 2, 3]], SamplingParams(max_new_tokens=2))[0]
    assert tokens["long"] == generator.generate([[5, 6, 7]], SamplingParams(max_new_tokens=60))[0]


def test_bad_job_fails_alone_and_cancelled_waiting_job_is_skipped(scheduler):
    rec = Recorder()
    bad = rec.job("bad", [10**9], SamplingParams(max_new_tokens=3))  # token id outside the vocabulary
    skipped = rec.job("skipped", [4, 5], SamplingParams(max_new_tokens=3))
    skipped.cancelled.set()
    good = rec.job("good", [4, 5], SamplingParams(max_new_tokens=3))
    for job in (bad, skipped, good):
        scheduler.submit(job)
    events = rec.until_done({"bad", "good"})
    assert isinstance(dict(events)["bad"], ValueError)
    assert [ev.finish_reason for n, ev in events if n == "good"][-1] == "length"
    assert all(n != "skipped" for n, _ in events)


def test_full_queue_refuses(generator):
    s = Scheduler(generator, max_batch=1, max_queue=1)
    try:
        hold = threading.Event()
        s.submit(Job([1], SamplingParams(max_new_tokens=50), lambda ev: hold.wait(10)))
        with pytest.raises(QueueFullError):
            for _ in range(3):
                s.submit(Job([1], SamplingParams(max_new_tokens=1), lambda ev: None))
        hold.set()
    finally:
        s.close()
