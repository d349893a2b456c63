"""Every hook a connector plugin can implement, in one place.

Hooks use the "register callback" style: the host passes ``register`` and owns the registry,
so it can refuse a duplicate key and name both plugins that claimed it. Full documentation
of each hook lives in docs/plugins.md.
"""
from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("connector")
hookimpl = pluggy.HookimplMarker("connector")


@hookspec
def register_apps(register: Callable[[type], None]) -> None:
    """Register App subclasses (external services) by calling ``register(AppClass)``.

    :param register: call once per App subclass; a key already taken is refused.
    """


@hookspec
def register_triggers(register: Callable[[type], None]) -> None:
    """Register PollTrigger, WebhookTrigger or ScheduleTrigger subclasses with ``register``.

    :param register: call once per Trigger subclass; its ``app`` must be a registered app key.
    """


@hookspec
def register_actions(register: Callable[[type], None]) -> None:
    """Register Action subclasses with ``register``.

    :param register: call once per Action subclass; its ``app`` must be a registered app key.
    """


@hookspec
def register_searches(register: Callable[[type], None]) -> None:
    """Register Search subclasses (find records; fill dropdowns) with ``register``.

    :param register: call once per Search subclass; its key shares the actions' namespace,
        because a search can be a flow step too.
    """
