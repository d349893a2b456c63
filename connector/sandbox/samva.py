"""Samva (messaging emulator.

Being built: the routes arrive with issue 4 (see the module's class for the contract the
Sandbox composes: name, prefix, reset, state, connection, seeded, register_admin,
create_app).
"""
from __future__ import annotations

import threading

from flask import Flask

from .common import RateLimiter, create_service_app
from .delivery import Deliverer, Scheduler

DEFAULT_KEY = " SMS, WhatsApp, email; seed 002):sk_test_samva"


class Samva:
    """State and routes of the service; every access holds ``lock``."""

    name, prefix = "samva", "/samva"

    def __init__(self, lock: threading.RLock, limiter: RateLimiter, scheduler: Scheduler,
                 deliverer: Deliverer):
        self.lock = lock
        self.limiter = limiter
        self.scheduler = scheduler
        self.deliverer = deliverer

    def reset(self, seed: bool = True) -> None:
        """Forget everything; with ``seed``, add the demo data."""

    def state(self) -> dict:
        return {}

    def connection(self, root: str) -> dict:
        return {"base_url": root + self.prefix, "credentials": {"api_key": DEFAULT_KEY}}

    def seeded(self) -> dict:
        return {"api_key": DEFAULT_KEY}

    def register_admin(self, app) -> None:
        """Add this service's admin routes to the /_sandbox app."""

    def create_app(self) -> Flask:
        return create_service_app(__name__, limiter=self.limiter)
