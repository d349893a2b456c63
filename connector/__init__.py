"""connector: a self-hosted triggers-to-actions integration host built on pluggy.

A plugin imports everything it needs from here::

    from connector import hookimpl, App, PollTrigger, WebhookTrigger, Action

The names are imported on first use (PEP 562), so ``connector --help`` does not pay for
marshmallow, phonenumbers and pluggy before it needs them.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "errors": ("APIError", "ConfigurationError", "ConnectorError", "FatalAPIError", "FlowError",
               "IdempotencyConflict", "OutcomeUnknown", "PluginError", "RetriableAPIError",
               "SignatureError", "Throttled", "UserError"),
    "hookspecs": ("hookimpl",),
    "fields": ("Phone",),
    "sdk": ("Action", "ActionContext", "App", "InputSchema", "JSONBody", "Park", "PollTrigger",
            "RateLimit", "ScheduleTrigger", "Search", "ServiceWebhookTrigger", "Trigger",
            "TriggerContext", "WebhookRequest", "WebhookTrigger"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'connector' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and editors see
    from .errors import (  # noqa: F401
        APIError, ConfigurationError, ConnectorError, FatalAPIError, FlowError,
        IdempotencyConflict, OutcomeUnknown, PluginError, RetriableAPIError, SignatureError,
        Throttled, UserError,
    )
    from .fields import Phone  # noqa: F401
    from .hookspecs import hookimpl  # noqa: F401
    from .sdk import (  # noqa: F401
        Action, ActionContext, App, InputSchema, JSONBody, Park, PollTrigger, RateLimit,
        ScheduleTrigger, Search, ServiceWebhookTrigger, Trigger, TriggerContext, WebhookRequest,
        WebhookTrigger,
    )
