"""Typed checks of YAML values for the sweep config: each failure is a ConfigError of one line naming the key."""

from __future__ import annotations

from kdel.errors import UserError

TOPOLOGIES = ("ba", "er", "powerlaw")
OUTCOMES = ("success", "failed", "all")
DEGREES = ("subject_degree", "object_degree")

MAX_SEEDS = 1000


class ConfigError(UserError):
    """A bad sweep config: one line naming the file and the key."""


def _err(where: str, msg: str) -> ConfigError:
    return ConfigError(f"{where}: {msg}")


# -- scalar checks ------------------------------------------------------------------------------------
def _int(v, where: str, lo: int | None = None, allow_none: bool = False) -> int | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _err(where, f"must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise _err(where, f"must be >= {lo}, got {v}")
    return v


def _float(v, where: str, lo: float | None = None, hi: float | None = None, allow_none: bool = False,
           strict_lo: bool = False) -> float | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _err(where, f"must be a number, got {v!r}")
    v = float(v)
    if lo is not None and (v <= lo if strict_lo else v < lo):
        raise _err(where, f"must be {'>' if strict_lo else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        raise _err(where, f"must be <= {hi}, got {v}")
    return v


def _choice(v, where: str, choices: tuple[str, ...]) -> str:
    if v not in choices:
        raise _err(where, f"must be one of {', '.join(choices)}, got {v!r}")
    return v


def _str(v, where: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _err(where, f"must be a non-empty string, got {v!r}")
    return v


def _bool(v, where: str) -> bool:
    if not isinstance(v, bool):
        raise _err(where, f"must be true or false, got {v!r}")
    return v


def _str_list(v, where: str, choices: tuple[str, ...] | None = None) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v:
        raise _err(where, f"must be a non-empty list, got {v!r}")
    out = []
    for i, x in enumerate(v):
        x = _str(x, f"{where}[{i}]") if choices is None else _choice(x, f"{where}[{i}]", choices)
        if x in out:
            raise _err(where, f"names {x!r} twice")
        out.append(x)
    return tuple(out)


def _mapping(v, where: str) -> dict:
    if not isinstance(v, dict):
        raise _err(where, f"must be a mapping of key: value, got {type(v).__name__}")
    for k in v:
        if not isinstance(k, str):
            raise _err(where, f"keys must be strings, got {k!r}")
    return v


def _no_unknown(d: dict, allowed, where: str) -> None:
    for k in d:
        if k not in allowed:
            raise _err(f"{where}.{k}" if where else k, f"unknown key (allowed: {', '.join(allowed)})")


def parse_seeds(v, where: str) -> tuple[int, ...]:
    """`seeds: N` (0..N-1) or `seeds: [s, ...]` (distinct integers >= 0)."""
    if isinstance(v, int) and not isinstance(v, bool):
        if not 1 <= v <= MAX_SEEDS:
            raise _err(where, f"a seed count must be between 1 and {MAX_SEEDS}, got {v}")
        return tuple(range(v))
    if not isinstance(v, list) or not v:
        raise _err(where, f"must be a seed count or a non-empty list of seeds, got {v!r}")
    seeds = tuple(_int(s, f"{where}[{i}]", lo=0) for i, s in enumerate(v))
    if len(set(seeds)) != len(seeds):
        raise _err(where, "names a seed twice")
    return seeds
