"""The dispatch loop the executor and the Celery dispatcher share.

A daemon thread calls ``dispatch()`` at once when woken (a webhook or poll queued a run, a
run finished), otherwise every ``dispatch_interval`` seconds, until stopped.
"""
from __future__ import annotations

import threading


class DispatchLoop:
    """Subclasses define ``dispatch()``; ``start``, ``wake`` and ``_halt`` drive it."""

    def __init__(self, interval: float):
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="connector-dispatch",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def dispatch(self):
        raise NotImplementedError

    def _halt(self, timeout: float) -> None:
        """Stop the loop and wait up to ``timeout`` seconds for its thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.dispatch()
            self._wake.wait(self.interval)
            self._wake.clear()
