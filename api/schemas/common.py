"""Fields and schemas shared by several resources."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import marshmallow as ma


class UTCDateTime(ma.fields.DateTime):
    """Naive UTC datetimes from the database, written as ISO 8601 with a `Z`."""

    def _serialize(self, value: dt.datetime | None, attr: Any, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.replace(microsecond=0).isoformat() + "Z"


class StrictSchema(ma.Schema):
    """Request bodies: unknown fields are an error, not silently dropped."""

    class Meta:
        unknown = ma.RAISE


class FullMatch(ma.validate.Regexp):
    """A Regexp validator over the whole value.

    marshmallow's uses `re.match`, whose `$` also matches before a final newline: "en\\n" passed as a
    language code and failed the job later. The pattern (in the OpenAPI document) keeps ^…$, which
    JSON Schema reads as the whole value.
    """

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ma.ValidationError(self._format_error(value))
        return value


LANGUAGE_CODE = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$"  # en, pt-BR, yue, zh-Hant


_Dumper = Callable[[Any], dict[str, Any]]


def _value_getter(source: str) -> Callable[[Any], Any]:
    """What marshmallow's default accessor reads: obj[source] for mappings, else the attribute."""
    if "." in source:
        return lambda obj: ma.utils.get_value(obj, source, ma.missing)

    def get(obj: Any) -> Any:
        if type(obj) is dict and source in obj:
            return obj[source]
        if hasattr(obj, "__getitem__"):
            return ma.utils.get_value(obj, source, ma.missing)
        return getattr(obj, source, ma.missing)

    return get


def _field_writer(name: str, field: ma.fields.Field) -> Callable[[Any, dict[str, Any]], None]:
    """Write `field` of `obj` into the output dict as Field.serialize would, minus the per-call overhead.

    Each field's own `_serialize` does the conversion (same output); a list of nested response schemas
    goes straight to their compiled dumper instead of a Schema.dump per item.
    """
    key = field.data_key if field.data_key is not None else name
    if not field._CHECK_ATTRIBUTE:  # Method, Function, Constant: computed from the whole object
        serialize = field._serialize

        def write_computed(obj: Any, out: dict[str, Any]) -> None:
            out[key] = serialize(None, name, obj)

        return write_computed

    get = _value_getter(field.attribute if field.attribute is not None else name)
    convert = _converter(name, field)
    dump_default = field.dump_default

    def write(obj: Any, out: dict[str, Any]) -> None:
        value = get(obj)
        if value is ma.missing:
            value = dump_default() if callable(dump_default) else dump_default
            if value is ma.missing:
                return
        out[key] = convert(value, obj)

    return write


def _converter(name: str, field: ma.fields.Field) -> Callable[[Any, Any], Any]:
    inner = field.inner if type(field) is ma.fields.List else None
    if isinstance(inner, ma.fields.Nested) and type(inner) is ma.fields.Nested:
        schema = inner.schema
        if isinstance(schema, ResponseSchema) and not (schema.many or inner.many):
            dump_one = schema.compiled_dumper()
            return lambda value, obj: None if value is None else [dump_one(item) for item in value]
    serialize = field._serialize
    return lambda value, obj: serialize(value, name, obj)


class ResponseSchema(ma.Schema):
    """A response body schema whose dump is compiled once: the same output, a few times faster.

    Schema.dump walks every field through Field.serialize, the accessor and, for nested lists, a
    Schema.dump per item; 20 segments or 20 list items made that a large share of a request. Schemas
    with pre/post-dump hooks keep marshmallow's own dump.
    """

    _dumper: _Dumper | None = None

    def compiled_dumper(self) -> _Dumper:
        dumper = self._dumper
        if dumper is None:
            writers = [_field_writer(name, field) for name, field in self.dump_fields.items()]
            dict_class = self.dict_class

            def dumper(obj: Any) -> dict[str, Any]:
                out = dict_class()
                for write in writers:
                    write(obj, out)
                return out

            self._dumper = dumper
        return dumper

    def dump(self, obj: Any, *, many: bool | None = None) -> Any:
        if self._hooks[ma.decorators.PRE_DUMP] or self._hooks[ma.decorators.POST_DUMP]:
            return super().dump(obj, many=many)
        dumper = self.compiled_dumper()
        if (self.many if many is None else many) and obj is not None:
            return [dumper(item) for item in obj]
        return dumper(obj)
