"""One thread owns the model and decodes queued requests in batches.

Requests from any number of clients go into a queue; the scheduler decodes up to ``max_batch``
of them together with ``BatchDecoder`` and hands every event to the request's own callback.
Between steps, waiting requests are prefilled and merged into the running batch whenever a slot
is free (continuous batching), so a short request does not wait for a long one to finish.
Only this thread touches the model and its KV cache, so concurrent requests cannot corrupt each
other. A cancelled request (its client disconnected) leaves the batch at the next step, which
frees its slot for a waiting request; requests cancelled while still waiting are skipped.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from weakwater.infer.generate import BatchDecoder, Generator, StepEvent
from weakwater.infer.sampling import SamplingParams

log = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """More requests are waiting than the server accepts; the client should retry later."""


@dataclass
class Job:
    """One generation request. ``emit`` is called from the scheduler thread with each event,
    or once with an exception if the request failed."""

    prompt: list[int]
    params: SamplingParams
    emit: Callable[[StepEvent | Exception], None]
    cancelled: threading.Event = field(default_factory=threading.Event)


class Scheduler:
    def __init__(self, generator: Generator, max_batch: int = 8, max_queue: int = 256) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.generator = generator
        self.max_batch = max_batch
        self.jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self.active = 0  # sequences in the batch being decoded (for tests and monitoring)
        self.cancelled = 0  # requests dropped mid-generation because their client went away
        self.tokens_generated = 0
        self._running: dict[int, Job] = {}  # batch index -> job, owned by the scheduler thread
        self._thread = threading.Thread(target=self._loop, name="weakwater-scheduler", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        try:
            self.jobs.put_nowait(job)
        except queue.Full as e:
            raise QueueFullError(f"server busy: {self.jobs.maxsize} requests are already waiting") from e

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the current batch (waiting jobs are dropped)."""
        while True:
            try:
                self.jobs.get_nowait()
            except queue.Empty:
                break
        self.jobs.put(None)
        self._thread.join(timeout)

    def _take(self, n: int, block: bool) -> list[Job] | None:
        """Up to ``n`` waiting, not cancelled jobs; None once ``close`` was called."""
        jobs: list[Job] = []
        while len(jobs) < n:
            try:
                job = self.jobs.get(block=block and not jobs)
            except queue.Empty:
                break
            if job is None:
                self.jobs.put(None)  # keep the stop signal for the outer loop
                return jobs or None
            if not job.cancelled.is_set():
                jobs.append(job)
        return jobs

    def _loop(self) -> None:
        while (batch := self._take(self.max_batch, block=True)) is not None:
            if not batch:
                continue
            self._running = {}
            try:
                self._run(batch)
            except Exception as e:  # one bad batch must never kill the server
                log.exception("generation failed")
                for job in self._running.values():
                    job.emit(e)
            finally:
                self.active = 0

    def _prefill(self, jobs: list[Job]) -> tuple[BatchDecoder | None, list[Job]]:
        """A prefilled decoder and the jobs it holds, in order. If the group fails (e.g. one
        prompt is invalid), each job is retried alone so only the bad ones get the error."""
        try:
            return self.generator.decoder([j.prompt for j in jobs], [j.params for j in jobs]), jobs
        except Exception as e:
            if len(jobs) == 1:
                log.warning("request rejected at prefill: %s", e)
                jobs[0].emit(e)
                return None, []
        decoder, held = None, []
        for job in jobs:
            single, ok = self._prefill([job])
            if single is None:
                continue
            if decoder is None:
                decoder = single
            else:
                decoder.merge(single)
            held += ok
        return decoder, held

    def _run(self, batch: list[Job]) -> None:
        decoder, held = self._prefill(batch)
        if decoder is None:
            return
        self._running = dict(enumerate(held))
        while not decoder.done:
            free = self.max_batch - len(decoder.rows)
            joining = self._take(free, block=False) if free > 0 else []
            if joining:
                new, held = self._prefill(joining)
                if new is not None:
                    self._running.update(zip(decoder.merge(new), held))
            live = {r.index for r in decoder.rows if r.finish_reason is None}
            for i in live:
                if self._running[i].cancelled.is_set():
                    decoder.cancel(i)
                    self.cancelled += 1
            self.active = len(decoder.rows)
            for event in decoder.step():
                self.tokens_generated += event.token is not None
                job = self._running[event.index]
                job.emit(event)
                if event.finish_reason is not None:
                    del self._running[event.index]
            live = {r.index for r in decoder.rows}
            for i in [i for i in self._running if i not in live]:
                del self._running[i]  # cancelled rows, dropped by the decoder without an event
