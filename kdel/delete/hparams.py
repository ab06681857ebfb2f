"""Hyperparameters of deletion methods: typed dataclasses, overridable from YAML and from code.

`load_hparams(cls, yaml_path, overrides)` builds an instance of the dataclass `cls` from its defaults, then
the YAML mapping, then `overrides` (later wins). Unknown keys and values of the wrong type are a
`UserError` naming the key; afterwards the instance's own `validate()` checks the values.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from kdel.errors import UserError


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp) -> Any:
    """`value` checked (and, for int -> float or list -> tuple, converted) against the annotation `tp`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except UserError:
                continue
        raise UserError(f"hyperparameter {key!r} must be {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"hyperparameter {key!r} must be a list, got {value!r}")
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        items = [_coerce(key, v, args[0]) for v in value] if args else list(value)
        return tuple(items) if origin is tuple else items
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"hyperparameter {key!r} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"hyperparameter {key!r} must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"hyperparameter {key!r} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"hyperparameter {key!r} must be a string, got {value!r}")
        return value
    return value


def read_yaml_mapping(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"hyperparameters file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"hyperparameters file {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"hyperparameters file {path} must hold a mapping of name: value")
    return data


def load_hparams(cls: type, yaml_path: str | Path | None = None, overrides: dict | None = None):
    """An instance of the hyperparameter dataclass `cls`: defaults < YAML file < overrides, then validated."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    given: dict[str, Any] = {}
    sources = []
    if yaml_path is not None:
        sources.append((f"{yaml_path}", read_yaml_mapping(yaml_path)))
    if overrides:
        sources.append(("overrides", dict(overrides)))
    for where, mapping in sources:
        for key, value in mapping.items():
            if key not in names:
                raise UserError(
                    f"unknown hyperparameter {key!r} in {where} for {cls.__name__}: known are {', '.join(names)}"
                )
            given[key] = _coerce(str(key), value, hints[key])
    hp = cls(**given)
    validate = getattr(hp, "validate", None)
    if callable(validate):
        validate()
    return hp


def require(condition: bool, message: str) -> None:
    """For `validate()` methods: raise a UserError with `message` unless `condition` holds."""
    if not condition:
        raise UserError(message)
