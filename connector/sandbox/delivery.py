"""Timed background work for the sandbox: call progress and signed webhook deliveries.

One :class:`Scheduler` (a small pool of worker threads reading a heap of due tasks) runs
everything that happens "later"; :class:`Deliverer` posts Standard Webhooks signed JSON
through it, retrying a non-2xx answer or a connection error after each configured delay
and logging every attempt.
"""
from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
from typing import Any, Callable

import requests

from connector.signatures import sign

from .common import now_iso, random_id

log = logging.getLogger(__name__)


class Scheduler:
    """Run callables after a delay on a fixed pool of worker threads, started lazily."""

    def __init__(self, workers: int = 4, name: str = "sandbox"):
        self._workers = workers
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._running = 0
        self._stopping = False
        self._epoch = 0
        self._local = threading.local()

    def schedule(self, delay: float, fn: Callable[[], None]) -> tuple | None:
        """Run ``fn`` on a worker after ``delay`` seconds; return a handle for :meth:`cancel`."""
        with self._cond:
            # A task left over from before cancel_all() must not schedule follow-ups.
            epoch = getattr(self._local, "epoch", self._epoch)
            if self._stopping or epoch != self._epoch:
                return None
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._work, name=f"{self._name}-worker-{i}",
                                     daemon=True)
                    for i in range(self._workers)
                ]
                for thread in self._threads:
                    thread.start()
            entry = (time.monotonic() + max(0.0, delay), next(self._seq), self._epoch, fn)
            heapq.heappush(self._heap, entry)
            self._cond.notify()
            return entry

    def cancel(self, handle: tuple | None) -> None:
        """Drop one queued task (no effect once it has started)."""
        with self._cond:
            if handle in self._heap:
                self._heap.remove(handle)
                heapq.heapify(self._heap)
                self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    if self._heap:
                        wait = self._heap[0][0] - time.monotonic()
                        if wait <= 0:
                            _, _, epoch, fn = heapq.heappop(self._heap)
                            self._running += 1
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
            self._local.epoch = epoch
            try:
                fn()
            except Exception:
                log.exception("sandbox background task failed")
            finally:
                del self._local.epoch
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()

    def wait_idle(self, timeout: float = 10) -> bool:
        """Wait until nothing is queued or running; return False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def cancel_all(self, timeout: float = 10) -> bool:
        """Drop every queued task and wait for running ones; return False on timeout."""
        with self._cond:
            self._epoch += 1
            self._heap.clear()
            self._cond.notify_all()
        return self.wait_idle(timeout)

    def stop(self, timeout: float = 10) -> None:
        """Drop queued tasks, stop the workers and join them; later schedules restart them."""
        with self._cond:
            self._stopping = True
            self._epoch += 1
            self._heap.clear()
            self._cond.notify_all()
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout)
        with self._cond:
            self._stopping = False


class Deliverer:
    """POST signed JSON webhooks with retries; keep a log of every attempt."""

    def __init__(self, scheduler: Scheduler, retry_delays=(0.2, 0.5, 1.0, 2.0),
                 timeout: float = 5.0, lock: threading.RLock | None = None):
        self.scheduler = scheduler
        self.retry_delays = tuple(retry_delays)
        self.timeout = timeout
        self.lock = lock or threading.RLock()
        self.log: list[dict[str, Any]] = []

    def send(self, url: str, secret: str, event: str, payload: dict,
             msg_id: str | None = None, source: str | None = None) -> str:
        """Queue one message for delivery (with retries); return its stable msg_id."""
        message = self._message(url, secret, event, payload, msg_id, source)
        self.scheduler.schedule(0, lambda: self._attempt(message, 1))
        return message["msg_id"]

    def send_now(self, url: str, secret: str, event: str, payload: dict,
                 msg_id: str | None = None, source: str | None = None) -> dict:
        """Attempt once in this thread (retries are queued on failure); return the log entry."""
        message = self._message(url, secret, event, payload, msg_id, source)
        return self._attempt(message, 1)

    def _message(self, url, secret, event, payload, msg_id, source) -> dict:
        return {
            "url": url, "secret": secret, "event": event, "source": source,
            "msg_id": msg_id or random_id("msg_"),
            # Serialised once so every retry carries exactly the same bytes.
            "body": json.dumps(payload, separators=(",", ":")).encode(),
        }

    def _attempt(self, message: dict, attempt: int) -> dict:
        headers = {"Content-Type": "application/json", "User-Agent": "connector-sandbox"}
        headers.update(sign(message["secret"], message["msg_id"], message["body"]))
        entry: dict[str, Any] = {
            "msg_id": message["msg_id"], "url": message["url"], "event": message["event"],
            "source": message["source"], "attempt": attempt, "at": now_iso(),
            "status": None, "error": None, "ok": False, "gave_up": False,
        }
        try:
            with requests.Session() as session:
                # Loopback receivers must not be routed through an environment proxy.
                session.trust_env = False
                response = session.post(message["url"], data=message["body"], headers=headers,
                                        timeout=self.timeout, allow_redirects=False)
            entry["status"] = response.status_code
            entry["ok"] = 200 <= response.status_code < 300
            if not entry["ok"]:
                entry["error"] = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            entry["error"] = type(exc).__name__
        if not entry["ok"]:
            if attempt <= len(self.retry_delays):
                delay = self.retry_delays[attempt - 1]
                self.scheduler.schedule(delay, lambda: self._attempt(message, attempt + 1))
            else:
                entry["gave_up"] = True
        with self.lock:
            self.log.append(entry)
        return dict(entry)

    def entries(self) -> list[dict]:
        """Return a copy of the delivery log, oldest first."""
        with self.lock:
            return [dict(e) for e in self.log]

    def clear(self) -> None:
        """Empty the delivery log."""
        with self.lock:
            self.log.clear()
