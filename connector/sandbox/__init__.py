"""Offline emulators of the services the connector integrates, served over real HTTP.

``Sandbox().start()`` serves them on loopback; see :mod:`connector.sandbox.app`.
"""
from .app import Sandbox

__all__ = ["Sandbox"]
