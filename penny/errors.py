"""The one error root. Domain errors know nothing of HTTP; `api/errors.py` maps them."""

from __future__ import annotations


class PennyError(Exception):
    """Base of every error penny raises on purpose."""

    code = "penny_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        details: list[dict[str, object]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        # Per-item problems (e.g. every bad entry of a bulk request), each naming its item.
        self.details = details or []


class InvalidRequest(PennyError):
    """The request is well-formed JSON but breaks a rule (a limit, a field's range)."""

    code = "invalid_request"


class UnknownModel(PennyError):
    """The request names a model penny does not serve."""

    code = "model_not_found"


class IdempotencyConflict(PennyError):
    """An Idempotency-Key was reused with a different request body."""

    code = "idempotency_key_reused"


class NotFound(PennyError):
    code = "not_found"


class SourceNotAllowed(PennyError):
    """An `s3://` object the tenant may not have penny read (checked before any read)."""

    code = "source_not_allowed"


class Unauthorized(PennyError):
    code = "invalid_api_key"


class InputFileError(PennyError):
    """A whole input file is unusable (unreadable, wrong format, empty, too large)."""

    code = "invalid_file"


class StateConflict(PennyError):
    """The request does not fit the object's current state (cancel an ended batch, ...)."""

    code = "invalid_state"


class TooLarge(PennyError):
    """An upload is over the configured size limit."""

    code = "file_too_large"


class InvalidJson(PennyError):
    """A body or line is not a JSON document penny can read (not UTF-8, bad syntax, NaN,
    nested too deeply)."""

    code = "invalid_json"


class QueueFull(PennyError):
    """The tenant already has as many jobs queued as it may; `retry_after` is in seconds."""

    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.retry_after = retry_after


class BudgetExceeded(PennyError):
    """The submission's worst-case cost would take the tenant past its hard budget."""

    code = "budget_exceeded"


class UnsafeBinding(PennyError):
    """Serving without API keys on an address other hosts can reach."""

    code = "unsafe_binding"


class MissingCapability(PennyError):
    """A configured feature this deployment cannot provide (the semantic cache on a
    Postgres without pgvector): refused at start-up, naming the setting."""

    code = "missing_capability"


class SourceUnavailable(PennyError):
    """The store holding a named `s3://` object did not answer, or refused penny itself
    (its credentials, an outage): nothing was read, and the same request may succeed
    later."""

    code = "source_unavailable"


class UnsafeUrl(InvalidRequest):
    """A URL penny would call is refused: a scheme other than http(s), credentials in it,
    or a host that is (or resolves to) a loopback, private, link-local, metadata,
    multicast or reserved address."""

    code = "unsafe_url"
