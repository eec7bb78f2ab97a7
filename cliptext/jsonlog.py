"""Logs as one JSON object per line (ts, level, logger, msg, request_id), the same in every process.

The request id travels API (X-Request-Id) -> RQ job meta -> gRPC TranscribeConfig.request_id; each
process puts the one it is working for in `request_id_var`, and every log line written meanwhile
carries it. `configure_logging(settings)` installs the one root handler (idempotent).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator

from cliptext.settings import Settings

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


@contextlib.contextmanager
def request_id_context(request_id: str | None) -> Iterator[None]:
    """Log lines written inside the block carry `request_id` (then the one before it again)."""
    token = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)


_HANDLER_NAME = "cliptext-root"
# loggers held at INFO whatever CLIPTEXT_LOG_LEVEL says. The AWS SDK's and its HTTP library's DEBUG
# lines carry the S3 access key id, the signatures of requests and presigned URLs, and URLs whole;
# peewee's carry every SQL statement with its values: transcripts, prompts, emails, key hashes
QUIET_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "peewee")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class RequestIdFilter(logging.Filter):
    """Stamp records with the current request id (unless the call gave one with extra=)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """ts (UTC ISO 8601, ms), level, logger, msg, request_id; exc_info as `exc` when present."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of `log_format` ("json" or "text"); its records need a RequestIdFilter."""
    if log_format == "text":
        return logging.Formatter(_TEXT_FORMAT)
    return JsonFormatter()


def configure_logging(settings: Settings, stream=None) -> logging.Handler:
    """Install (once per process) the root handler in settings.log_format at settings.log_level."""
    root = logging.getLogger()
    for handler in root.handlers:
        if handler.get_name() == _HANDLER_NAME:
            return handler
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(formatter(settings.log_format))
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    quiet_third_party(root.level)
    return handler


def quiet_third_party(level: int) -> None:
    """QUIET_LOGGERS at `level`, but never below INFO: CLIPTEXT_LOG_LEVEL=DEBUG is for our own lines,
    and must not write credentials and signatures to the logs."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.INFO))
