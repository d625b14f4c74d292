"""One exception hierarchy for domain errors; services/api/errors.py maps each to an HTTP answer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class SaekinError(Exception):
    """Base of every domain error. `code` is the stable machine-readable name clients see."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(SaekinError):
    code = "invalid_input"
    http_status = 422


class NotFound(SaekinError):
    code = "not_found"
    http_status = 404


class Conflict(SaekinError):
    code = "conflict"
    http_status = 409


class ConcurrentWrite(Conflict):
    """A row this transaction inserts was inserted by a concurrent one (a unique constraint held):
    the caller retries the transaction, which then finds that row."""

    code = "concurrent_upload"


class PayloadTooLarge(SaekinError):
    code = "payload_too_large"
    http_status = 413


class UnsupportedMediaType(SaekinError):
    code = "unsupported_media_type"
    http_status = 415


class ExtractionError(SaekinError):
    """A document's bytes could not be turned into text (corrupt, encrypted, hostile, no text)."""

    code = "extraction_failed"
    http_status = 422


class TooManyRequests(SaekinError):
    """The service is busy (its ingestion backlog is full): try again after `retry_after_s` seconds."""

    code = "too_many_requests"
    http_status = 429

    def __init__(self, message: str, *, retry_after_s: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class ServiceUnavailable(SaekinError):
    code = "unavailable"
    http_status = 503


class ModelUnavailable(ServiceUnavailable):
    """A configured model (the reranker) could not be loaded or is not the kind of model expected."""

    code = "model_unavailable"


class DataDirLocked(SaekinError):
    """Another process already owns the embedded data directory."""

    code = "data_dir_locked"
    http_status = 503


def describe_validation_errors(errors: Iterable[Mapping]) -> str:
    """Pydantic's errors as one line, `field.path: message; ...` (the API's message, the CLI's error)."""
    return "; ".join(f"{'.'.join(map(str, e.get('loc', ()))) or 'value'}: {e.get('msg', '')}" for e in errors)
