"""Dynamic batching: one queue of tokenized inputs and one thread that runs the model on them.

Whenever the model thread is free it takes what is queued, of one kind (embeddings with one normalisation, or
predictions), oldest first, up to `max_batch_tokens` padded tokens (rows x the longest row), and runs it, sorted
longest first, as one pass. No timer waits for a batch to fill: a lone request runs at once, and a crowd that arrives
while a pass runs shares the next one. The inputs of a request whose client has gone are dropped when they are taken, before they
are computed. Admission is bounded: `admit` refuses inputs beyond `max_waiting` at once, so the queue never grows
without limit. Tokenization happens on the request side (serve/service.py), so this thread only runs the model.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# A forward pass that runs longer than this makes /health answer 503: the model thread is taken to be stuck. The largest
# default batch (16,384 tokens) takes about a second on a 2-core CPU for MiniLM-L6, so a minute is far beyond a real pass.
STALL_SECONDS = 60.0


@dataclass(eq=False)
class Job:
    """One request's inputs of one kind, and the future its handler awaits (set from the model thread)."""

    kind: tuple  # inputs of one kind can share a forward pass: ("embed", normalize) or ("predict", raw_scores)
    ids: list[list[int]]
    type_ids: list[list[int]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    cancelled: bool = False  # the client has gone, or a batch with this job's inputs failed: drop the rest
    results: list = field(init=False)
    remaining: int = field(init=False)
    queued_at: float = field(init=False, default_factory=time.monotonic)

    def __post_init__(self):
        self.results = [None] * len(self.ids)
        self.remaining = len(self.ids)


@dataclass(eq=False)
class Item:
    job: Job
    index: int  # the input's row in its job

    @property
    def length(self) -> int:
        return len(self.job.ids[self.index])


# The model's work: (kind, token ids, token type ids) of one batch -> one result per row, in order.
Compute = Callable[[tuple, list[list[int]], list[list[int]]], Sequence]


class Batcher:
    def __init__(self, compute: Compute, max_batch_tokens: int, max_waiting: int, metrics,
                 initializer: Callable[[], None] | None = None):
        """`initializer`: called once on the model thread before its first pass (as ThreadPoolExecutor's)."""
        self.compute = compute
        self.initializer = initializer
        self.max_batch_tokens = max_batch_tokens
        self.max_waiting = max_waiting
        self.metrics = metrics
        self.waiting = 0  # inputs admitted and not yet answered (tokenizing, queued or in the running pass)
        self.busy_since: float | None = None
        self._queue: list[Item] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="miniberts-model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Run what is queued, then end the model thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()

    def healthy(self) -> bool:
        busy = self.busy_since
        return self._thread.is_alive() and (busy is None or time.monotonic() - busy < STALL_SECONDS)

    def admit(self, count: int) -> bool:
        """Reserve room for `count` inputs; False (nothing reserved) when that would exceed `max_waiting`."""
        with self._cond:
            if self.waiting + count > self.max_waiting:
                return False
            self.waiting += count
            self.metrics.waiting.set(self.waiting)
            self.metrics.admitted.inc(count)
            return True

    def release(self, count: int) -> None:
        with self._cond:
            self.waiting -= count
            self.metrics.waiting.set(self.waiting)

    def submit(self, job: Job) -> None:
        with self._cond:
            self._queue.extend(Item(job, i) for i in range(len(job.ids)))
            self.metrics.queue_size.set(len(self._queue))
            self._cond.notify()

    def _loop(self) -> None:
        if self.initializer is not None:
            self.initializer()
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = self._take()
            if batch:
                self._run(batch)

    def _take(self) -> list[Item]:
        """The next batch (called holding the lock): inputs of the oldest input's kind, oldest first, as many as fit
        the budget (rows x the longest row taken), then sorted longest first for the forwards. Taken by age, not by
        length: taken longest first, a short input waited while longer ones kept arriving, and a many-input request
        was answered only when the whole queue had run. Inputs of cancelled jobs leave the queue here, uncomputed."""
        kind = self._queue[0].job.kind
        dropped = [it for it in self._queue if it.job.cancelled]
        batch: list[Item] = []
        width = 0
        for it in self._queue:
            if it.job.cancelled or it.job.kind != kind:
                continue
            if batch and max(width, it.length) * (len(batch) + 1) > self.max_batch_tokens:
                continue  # a later, shorter input may still fit; this one is among the oldest of the next pass
            batch.append(it)
            width = max(width, it.length)
        batch.sort(key=lambda it: -it.length)
        taken = {id(it) for it in batch + dropped}
        self._queue = [it for it in self._queue if id(it) not in taken]
        self.metrics.queue_size.set(len(self._queue))
        if dropped:
            self.metrics.dropped.inc(len(dropped))
            self.waiting -= len(dropped)
            self.metrics.waiting.set(self.waiting)
        return batch

    def _run(self, batch: list[Item]) -> None:
        now = time.monotonic()
        for it in batch:
            self.metrics.queue_seconds.observe(now - it.job.queued_at)
        self.busy_since = now
        try:
            out, error = self.compute(batch[0].job.kind, [it.job.ids[it.index] for it in batch],
                                      [it.job.type_ids[it.index] for it in batch]), None
        except Exception as e:  # an engine error or out of memory fails this batch's requests, not the server
            log.exception("a batch of %d inputs failed", len(batch))
            out, error = None, e
        self.busy_since = None
        self.metrics.inference_seconds.observe(time.monotonic() - now)
        self.metrics.batch_size.observe(len(batch))
        self.metrics.batch_tokens.observe(len(batch) * batch[0].length)
        self.release(len(batch))  # before any answer goes out: a client holding its answer finds its inputs released
        done: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, list | None]]] = {}
        if error is not None:
            for job in {id(it.job): it.job for it in batch}.values():
                job.cancelled = True
                done.setdefault(job.loop, []).append((job.future, None))
        else:
            for row, it in enumerate(batch):
                it.job.results[it.index] = out[row]
                it.job.remaining -= 1
                if it.job.remaining == 0:
                    done.setdefault(it.job.loop, []).append((it.job.future, it.job.results))
        # One wake-up per event loop and pass, not one per request: each call_soon_threadsafe writes to the loop's
        # wake-up socket, a system call and a loop iteration that 64 one-sentence clients paid per pass.
        for loop, settled in done.items():
            loop.call_soon_threadsafe(_settle, settled, error)


def _settle(settled: list[tuple[asyncio.Future, list | None]], error: BaseException | None) -> None:
    """Set each future (with its results, or `error`) on its own event loop, unless its handler stopped waiting."""
    for future, result in settled:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
