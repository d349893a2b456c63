"""Every error the host and plugins raise, in one place.

Two families matter to the engine: :class:`RetriableAPIError` (try the step again later,
honouring ``retry_after``) and :class:`FatalAPIError` (fail the run with the service's own
message). Everything derived from :class:`UserError` is a mistake a user can fix; the CLI
prints its message on one line and exits non-zero, never a traceback. Messages name the
field and what was expected, and never include a credential or a query string.
"""
from __future__ import annotations


class ConnectorError(Exception):
    """Base class of every error the connector raises on purpose."""


class UserError(ConnectorError):
    """A mistake in what the user gave (a flow file, an option, an input): say what to fix."""


class ConfigurationError(UserError):
    """The host is misconfigured (database URL, secret key, public URL)."""


class NotFound(UserError):
    """A named thing (connection, flow, run, plugin key) does not exist."""


class FlowError(UserError):
    """A flow definition is invalid; ``field`` names the offending place, e.g. steps[1].inputs."""

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class PluginError(ConnectorError):
    """A plugin is broken or conflicts with another (duplicate key, bad declaration)."""


class SignatureError(ConnectorError):
    """A webhook request failed verification; the message says which check failed."""


class APIError(ConnectorError):
    """A call to an external service failed.

    ``status`` is the HTTP status (None for a connection error); ``message`` is the
    service's own message where it sent one; ``code`` its error code if any.
    """

    retriable = False

    def __init__(self, message: str, status: int | None = None, code: str | None = None,
                 retry_after: float | None = None, maybe_applied: bool = False):
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        #: True when the request may have reached the service and taken effect (a read
        #: timeout, a connection dropped mid-answer); an HTTP error status means it did not.
        self.maybe_applied = maybe_applied
        super().__init__(self.describe())

    def describe(self) -> str:
        prefix = f"HTTP {self.status}" if self.status else "connection error"
        code = f" {self.code}" if self.code else ""
        return f"{prefix}{code}: {self.message}"


class RetriableAPIError(APIError):
    """Transient failure (connection error, 408, 429, 5xx): the step is tried again later."""

    retriable = True


class FatalAPIError(APIError):
    """Permanent failure (4xx other than 408/429): the run fails with the service's message."""


class Throttled(RetriableAPIError):
    """Raised by a plugin to put a run back to wait ``delay`` seconds instead of failing it."""

    def __init__(self, delay: float, message: str = "throttled"):
        super().__init__(message, retry_after=delay)


class IdempotencyConflict(ConnectorError):
    """The same idempotency key was used with different inputs: an error, not a second effect."""


class OutcomeUnknown(ConnectorError):
    """A non-repeatable call may or may not have taken effect; a human must check first."""
