"""connector: a self-hosted triggers-to-actions integration host built on pluggy.

A plugin imports everything it needs from here::

    from connector import hookimpl, App, PollTrigger, WebhookTrigger, Action
"""
from .errors import (
    APIError, ConfigurationError, ConnectorError, FatalAPIError, FlowError,
    IdempotencyConflict, OutcomeUnknown, PluginError, RetriableAPIError, SignatureError,
    Throttled, UserError,
)
from .hookspecs import hookimpl
from .fields import Phone
from .sdk import (
    Action, ActionContext, App, InputSchema, Park, PollTrigger, ScheduleTrigger, Search,
    ServiceWebhookTrigger, Trigger, TriggerContext,
    WebhookRequest, WebhookTrigger,
)

__version__ = "0.1.0"

__all__ = [
    "APIError", "Action", "ActionContext", "App", "ConfigurationError", "ConnectorError",
    "FatalAPIError", "FlowError", "IdempotencyConflict", "InputSchema", "OutcomeUnknown",
    "Park", "Phone", "ServiceWebhookTrigger",
    "PluginError", "PollTrigger", "RetriableAPIError", "ScheduleTrigger", "Search",
    "SignatureError", "Throttled",
    "Trigger", "TriggerContext", "UserError", "WebhookRequest", "WebhookTrigger", "hookimpl",
]
