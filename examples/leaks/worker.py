"""Planted leak: a worker thread that never exits.

``Worker`` runs jobs from a queue on its own thread. The leaky ``cycle`` submits a job, waits
for its result and forgets the worker: the thread blocks on the empty queue forever, one more
thread per cycle. ``cycle_fixed`` stops it (a sentinel, then join).

    coroscope leaks --cycles 20 -- examples/leaks/worker.py
    coroscope leaks --cycles 20 -- examples/leaks/worker.py:cycle_fixed
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

_STOP = object()


class Worker:
    def __init__(self, name: str = "job-worker"):
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()  # PLANTED: thread

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is _STOP:
                return
            func, future = item
            future.set_result(func())

    def submit(self, func) -> Future:
        future: Future = Future()
        self._jobs.put((func, future))
        return future

    def stop(self) -> None:
        self._jobs.put(_STOP)
        self._thread.join()


def cycle() -> None:
    worker = Worker()
    assert worker.submit(lambda: 6 * 7).result(5) == 42


def cycle_fixed() -> None:
    worker = Worker()
    try:
        assert worker.submit(lambda: 6 * 7).result(5) == 42
    finally:
        worker.stop()
