"""JSON <-> dataclass conversion with validation derived from the dataclasses' type hints.

Supported annotations: str, int, float, bool, Any, dict / dict[str, X], list / list[X], X | None and nested
dataclasses. A field without a default is a required key; `X | None` accepts null. A field whose metadata has
`omit_none` is left out of the JSON when None (and may be absent); `key` renames the JSON key (e.g. `global`).
Numbers keep their JSON type (an int in a float field stays an int), and keys a record does not declare are
kept and written back, so `to_json(from_json(d)) == d` for every valid document.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import lru_cache
from typing import Any

_EXTRA = "_json_extra"  # instance attribute holding undeclared keys


class CaseSchemaError(ValueError):
    """A document that does not follow its schema (truncated, corrupted, or from another version)."""


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def json_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _type_name(tp) -> str:
    if dataclasses.is_dataclass(tp):
        return "object"
    return {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "list"}.get(
        tp, str(tp).replace("typing.", ""))


def convert(value: Any, tp, where: str) -> Any:
    """`value` checked against `tp` (dataclasses built from their dicts); raises CaseSchemaError."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise CaseSchemaError(f"{where} must not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg, where)
            except CaseSchemaError as e:
                errors.append(str(e))
        raise CaseSchemaError(errors[0] if len(errors) == 1 else f"{where} has the wrong type ({type(value).__name__})")
    if dataclasses.is_dataclass(tp):
        return from_json(tp, value, where)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise CaseSchemaError(f"{where} must be an object, got {type(value).__name__}")
        args = typing.get_args(tp)
        if not args:
            return value
        return {k: convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise CaseSchemaError(f"{where} must be a list, got {type(value).__name__}")
        args = typing.get_args(tp)
        if not args:
            return value
        return [convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }.get(tp)
    if ok is None:
        raise TypeError(f"unsupported annotation {tp!r} at {where}")
    if not ok(value):
        raise CaseSchemaError(f"{where} must be a {_type_name(tp)}, got {type(value).__name__} {value!r:.40}")
    return value


def from_json(cls: type, d: Any, where: str = ""):
    """An instance of dataclass `cls` from its JSON dict, validating every key (CaseSchemaError)."""
    label = where or cls.__name__
    if not isinstance(d, dict):
        raise CaseSchemaError(f"{label} must be an object, got {type(d).__name__}")
    hints = _hints(cls)
    kwargs, known = {}, set()
    for f in dataclasses.fields(cls):
        key = json_key(f)
        known.add(key)
        path = f"{where}.{key}" if where else key
        if key not in d:
            if _required(f):
                raise CaseSchemaError(f"missing key {path!r}")
            continue
        kwargs[f.name] = convert(d[key], hints[f.name], path)
    obj = cls(**kwargs)
    extra = {k: v for k, v in d.items() if k not in known}
    if extra:
        object.__setattr__(obj, _EXTRA, extra)
    check = getattr(obj, "check", None)
    if callable(check):
        check()
    return obj


def _value_json(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return to_json(v)
    if isinstance(v, dict):
        return {k: _value_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_value_json(x) for x in v]
    return v


def to_json(obj) -> dict:
    """The JSON dict of a dataclass instance (inverse of `from_json`)."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if v is None and f.metadata.get("omit_none"):
            continue
        out[json_key(f)] = _value_json(v)
    for k, v in getattr(obj, _EXTRA, {}).items():
        out.setdefault(k, v)
    return out


def opt(**metadata) -> dataclasses.Field:
    """A field that is None by default and left out of the JSON when None."""
    return dataclasses.field(default=None, metadata={"omit_none": True, **metadata})
