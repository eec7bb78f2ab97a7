"""Flask's JSON responses (jsonify, error bodies) through orjson.

Why: the stdlib encoder was a tenth of a GET's server CPU (bench/load.py). Output stays what Flask's
default provider gives a client: keys sorted, compact, a trailing newline, dates as HTTP dates,
Decimal and UUID as strings, dataclasses as objects. Non-ASCII text is sent as UTF-8 instead of
\\u escapes (the same JSON value). What orjson refuses (an integer beyond 64 bits, a lone surrogate)
goes through the stdlib encoder, so no value Flask could send turns into a 500 here. Parsing stays
the stdlib's.
"""

from __future__ import annotations

import dataclasses
import decimal
import json
import uuid
from datetime import date
from typing import Any

import orjson
from flask import Response
from flask.json.provider import JSONProvider
from werkzeug.http import http_date

_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _default(value: Any) -> Any:
    """Types orjson leaves to us, mapped as Flask's default provider maps them."""
    if isinstance(value, date):
        return http_date(value)
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "__html__"):
        return str(value.__html__())
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dump_bytes(value: Any, indent: bool = False) -> bytes:
    """`value` as compact (or indented) JSON bytes, keys sorted."""
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS | (orjson.OPT_INDENT_2 if indent else 0))
    except orjson.JSONEncodeError:
        text = json.dumps(  # ASCII: a lone surrogate (which orjson refuses too) stays a \u escape
            value,
            default=_default,
            sort_keys=True,
            indent=2 if indent else None,
            separators=None if indent else (",", ":"),
        )
        return text.encode()


class OrjsonProvider(JSONProvider):
    """Drop-in for Flask's DefaultJSONProvider (set as `app.json`)."""

    mimetype = "application/json"

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """Arguments given (flask-smorest's OpenAPI document: indent, sort_keys=False) go to the stdlib
        exactly as Flask's provider passes them; none (the hot path) to orjson."""
        if kwargs:
            kwargs.setdefault("default", _default)
            kwargs.setdefault("ensure_ascii", True)
            kwargs.setdefault("sort_keys", True)
            return json.dumps(obj, **kwargs)
        return dump_bytes(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """The stdlib, as Flask's provider: request bodies are small, and orjson reads them differently
        (integers beyond 64 bits as floats, no UTF-16 or BOM)."""
        return json.loads(s, **kwargs)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        body = dump_bytes(obj, indent=self._app.debug)
        return self._app.response_class(body + b"\n", mimetype=self.mimetype)
