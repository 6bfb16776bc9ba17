"""The bounded queue between the HTTP handlers and the model: :class:`Batcher`.

Handlers :meth:`~Batcher.submit` a decoded image with its request and wait on the returned
future; one worker thread takes up to ``max_batch`` waiting jobs at a time and runs them
through :meth:`Pipeline.run <mask2former.inference.pipeline.Pipeline.run>` in one call, which
groups them by network input size. One thread owns the model, so requests never race on it, and
concurrent requests share forward passes instead of queueing one by one.
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Deque, List, Optional

import numpy as np

from ..inference.options import TaskOptions
from ..inference.results import SegmentationResult

__all__ = ["Batcher", "Job", "QueueFull", "ShuttingDown"]


class QueueFull(RuntimeError):
    """Too many requests are waiting: the caller should answer 503."""


class ShuttingDown(RuntimeError):
    """The batcher was stopped before the job ran."""


@dataclass
class Job:
    """One image and its request; ``future`` receives its :class:`SegmentationResult`."""

    image: np.ndarray
    options: TaskOptions
    future: Future[SegmentationResult] = field(default_factory=Future)


class Batcher:
    """A bounded queue of :class:`Job` and the worker thread that runs them in batches.

    Args:
        pipeline: anything with ``run(images, requests, batch_size)`` as
            :class:`~mask2former.inference.pipeline.Pipeline` has (tests pass a stub).
        max_batch: most jobs run in one pipeline call.
        queue_size: most jobs waiting (the running batch not counted).
    """

    def __init__(self, pipeline: Any, max_batch: int, queue_size: int) -> None:
        self.pipeline = pipeline
        self.max_batch = max_batch
        self.queue_size = queue_size
        self._jobs: Deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self.batches = 0  # pipeline calls so far (for /healthz and the tests)

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._jobs)

    @property
    def full(self) -> bool:
        with self._cond:
            return len(self._jobs) >= self.queue_size

    def submit(self, image: np.ndarray, options: TaskOptions) -> Future[SegmentationResult]:
        """Queue one job; :class:`QueueFull` when ``queue_size`` jobs already wait."""
        job = Job(image, options)
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if len(self._jobs) >= self.queue_size:
                raise QueueFull(f"server busy: {len(self._jobs)} requests waiting")
            self._jobs.append(job)
            self._start_locked()
            self._cond.notify()
        return job.future

    def _start_locked(self) -> None:
        # Started by the first job rather than by the app's startup, so an app used without
        # its lifespan events (some test clients) still works.
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="mask2former-batcher")
            self._thread.daemon = True  # never keeps a killed server's process alive
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Fail the waiting jobs, let the running batch finish, end the worker."""
        with self._cond:
            self._stopping = True
            left = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
            thread = self._thread
        for job in left:
            if job.future.set_running_or_notify_cancel():  # not when its client went away
                job.future.set_exception(ShuttingDown("the server is shutting down"))
        if thread is not None:
            thread.join(timeout)

    def _take(self) -> List[Job]:
        """Wait for jobs; then up to ``max_batch`` of them, oldest first ([] when stopping)."""
        with self._cond:
            while not self._jobs and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return []
            count = min(self.max_batch, len(self._jobs))
            return [self._jobs.popleft() for _ in range(count)]

    def _work(self) -> None:
        while True:
            jobs = self._take()
            if not jobs:
                return
            self.batches += 1
            self._run(jobs)

    def _run(self, jobs: List[Job]) -> None:
        """Run jobs together; if that fails, each alone, so one bad image fails only itself."""
        live = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        if len(live) > 1:
            try:
                results = self._call(live)
            except Exception:
                pass  # retried one by one below
            else:
                for job, result in zip(live, results):
                    job.future.set_result(result)
                return
        for job in live:
            self._run_alone(job)

    def _run_alone(self, job: Job) -> None:
        try:
            job.future.set_result(self._call([job])[0])
        except Exception as e:  # reported to that request's handler, never kills the worker
            job.future.set_exception(e)

    def _call(self, jobs: List[Job]) -> List[SegmentationResult]:
        """One pipeline call for all ``jobs``: every distinct request is post-processed for
        every image (cheap next to the forward pass that they then share); each job keeps its
        own request's result."""
        if not jobs:
            return []
        requests = list(dict.fromkeys(j.options for j in jobs))
        out = self.pipeline.run([j.image for j in jobs], requests, batch_size=self.max_batch)
        return [out[i][requests.index(j.options)] for i, j in enumerate(jobs)]
