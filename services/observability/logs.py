"""Logging set-up for every Saekin process: text or JSON lines, a request id on each record.

`configure_logging` is called by the commands that run for long (`saekin serve`, `saekin worker`);
library code only logs. Fields given with `extra=` (the document events' document_id, collection,
stage, duration_s, chunks, reason) become keys of a JSON line, and `key=value` pairs in text.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from contextvars import ContextVar
from typing import Literal

LogFormat = Literal["text", "json"]

# The id of the HTTP request being served; contextvars reach the thread pool FastAPI runs sync routes in.
request_id_var: ContextVar[str | None] = ContextVar("saekin_request_id", default=None)
# An incoming X-Request-ID is kept when it looks like an id (a proxy's or a client's); anything
# else (too long, spaces, control characters that could forge log lines) is replaced.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}
# Alembic's start-up chatter (plugin set-up, the DDL context) on every `serve` and `migrate`;
# "Running upgrade ..." lines stay.
_ALEMBIC_CHATTER = ("setup plugin", "Context impl", "Will assume")


def new_request_id(incoming: str | None) -> str:
    """`incoming` if it is a sane id, else a new random one."""
    if incoming and _SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Puts the current request id (or "-") on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get() or "-"
        return True


class AlembicChatterFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("alembic") and str(record.msg).startswith(_ALEMBIC_CHATTER))


class TextFormatter(logging.Formatter):
    """`time level logger [request id] message key=value...` with the record's extra fields."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items() if v is not None)
        return line


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "{asctime}{levelname}{name}{message}{request_id}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        json_ensure_ascii=False,  # Korean titles and reasons stay readable
    )


def configure_logging(log_format: LogFormat = "text", level: str | int = "INFO", *, stream=None) -> None:
    """One handler on the root logger (replacing earlier ones): text or JSON lines, request ids,
    Alembic's chatter dropped."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(AlembicChatterFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Uvicorn's own handlers would print the same lines a second time, in another format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
