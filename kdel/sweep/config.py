"""The sweep config (YAML): conditions × seeds, one primary hypothesis, the analyses to aggregate.

Parsed into typed, validated dataclasses. Every error is a UserError of one line that names the file and
the key (`config.yaml: conditions[1].sites: unknown edit site 'x' ...`); unknown keys are errors too.
The schema is documented key by key in docs/sweep.md; `CONDITION_KEYS` below is its source.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdel.errors import UserError
from kdel.sweep.checks import (DEGREES, OUTCOMES, TOPOLOGIES, ConfigError, _bool, _choice, _err, _float, _int, _mapping, _no_unknown, _str,
                               _str_list, parse_seeds)

CONFIG_FORMAT = "kdel-sweep-config/1"
FORMATS = ("natural", "sro")
SITES = ("subject_last", "last")

# Condition keys: name -> (stage it feeds, default). The stage decides which cache key it enters.
CONDITION_KEYS: dict[str, tuple[str, Any]] = {
    # the KG (synth_kg.KGConfig)
    "topology": ("kg", "ba"),
    "entities": ("kg", 200),
    "relations": ("kg", 50),
    "ba_m": ("kg", 3),
    "edges": ("kg", None),
    "exponent": ("kg", 2.5),
    "format": ("kg", "natural"),
    "attribute_relations": ("kg", 0),
    "exposure": ("kg", "uniform"),
    "repeats": ("kg", 1),
    # the model (kdel.train.TrainConfig); the training seed is the cell's seed
    "model": ("train", "tiny"),
    "target_recall": ("train", 0.99),
    "max_steps": ("train", 20_000),
    "lr": ("train", None),
    # the audit (kdel.audit.AuditConfig); the sampling seed is the cell's seed
    "methods": ("audit", ("rome",)),
    "objective": ("audit", "erase"),
    "sites": ("audit", ("subject_last", "last")),
    "layers": ("audit", "auto"),
    "per_bin": ("audit", 2),
    "bins": ("audit", 5),
    "stratify": ("audit", "subject"),
    "unrelated": ("audit", 100),
    "hparams": ("audit", {}),
    "tracing_effect": ("audit", True),
    "noise_samples": ("audit", 10),
}
META_KEYS = ("name", "seeds", "vary")
TOP_KEYS = ("format", "name", "description", "seeds", "defaults", "conditions", "primary", "analyses",
            "results_md", "n_boot", "level", "device")


# -- conditions ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Condition:
    """One experimental condition (every key typed and validated); run once per seed."""

    name: str
    seeds: tuple[int, ...]
    topology: str = "ba"
    entities: int = 200
    relations: int | str = 50
    ba_m: int = 3
    edges: int | None = None
    exponent: float = 2.5
    format: str = "natural"
    attribute_relations: int = 0
    exposure: str = "uniform"
    repeats: int = 1
    model: str = "tiny"
    target_recall: float = 0.99
    max_steps: int = 20_000
    lr: float | None = None
    methods: tuple[str, ...] = ("rome",)
    objective: str = "erase"
    sites: tuple[str, ...] = ("subject_last", "last")
    layers: str | tuple[int, ...] = "auto"
    per_bin: int = 2
    bins: int = 5
    stratify: str = "subject"
    unrelated: int = 100
    hparams: dict = field(default_factory=dict, hash=False, compare=True)
    tracing_effect: bool = True
    noise_samples: int = 10
    varied: tuple[tuple[str, Any], ...] = ()  # (key, value) set by `vary`, in order

    def settings(self) -> dict:
        """Every condition key and its value (JSON-ready), without the name, seeds and `varied`."""
        d = {k: getattr(self, k) for k in CONDITION_KEYS}
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    def to_json(self) -> dict:
        return {"name": self.name, "seeds": list(self.seeds), "varied": {k: v for k, v in self.varied},
                **self.settings()}


def _check_condition_value(key: str, v, where: str):
    """The validated (normalised) value of condition key `key`."""
    if key == "topology":
        return _choice(v, where, TOPOLOGIES)
    if key == "format":
        return _choice(v, where, FORMATS)
    if key == "entities":
        return _int(v, where, lo=2)
    if key == "relations":
        return v if v == "auto" else _int(v, where, lo=1)
    if key in ("ba_m", "repeats", "max_steps", "per_bin", "bins", "noise_samples"):
        return _int(v, where, lo=1)
    if key in ("attribute_relations", "unrelated"):
        return _int(v, where, lo=0)
    if key == "edges":
        return _int(v, where, lo=1, allow_none=True)
    if key == "exponent":
        return _float(v, where, lo=1.0, strict_lo=True)
    if key == "exposure":
        return _choice(v, where, ("uniform", "popularity"))
    if key == "model":
        from kdel.train.presets import PRESETS

        return _choice(v, where, tuple(PRESETS))
    if key == "target_recall":
        return _float(v, where, lo=0.0, hi=1.0, strict_lo=True)
    if key == "lr":
        return _float(v, where, lo=0.0, strict_lo=True, allow_none=True)
    if key == "methods":
        from kdel.delete import list_methods

        return _str_list(v, where, tuple(list_methods()))
    if key == "objective":
        from kdel.delete.objectives import OBJECTIVES

        return _choice(v, where, tuple(OBJECTIVES))
    if key == "sites":
        return _str_list(v, where, SITES)
    if key == "layers":
        if v in ("auto", "all"):
            return v
        if isinstance(v, int) and not isinstance(v, bool):
            v = [v]
        if not isinstance(v, list) or not v:
            raise _err(where, f"must be auto, all or a list of layer indices, got {v!r}")
        out = tuple(_int(x, f"{where}[{i}]", lo=0) for i, x in enumerate(v))
        if len(set(out)) != len(out):
            raise _err(where, "names a layer twice")
        return out
    if key == "stratify":
        return _choice(v, where, ("subject", "object"))
    if key == "hparams":
        return {m: dict(_mapping(h, f"{where}.{m}")) for m, h in _mapping(v, where).items()}
    if key == "tracing_effect":
        return _bool(v, where)
    raise _err(where, "unknown key")  # pragma: no cover - CONDITION_KEYS and this function agree


def _check_condition(c: Condition, where: str) -> None:
    """Checks that need several keys or the method registry: hparams of listed methods, known hparams."""
    from kdel.audit.cases import resolve_hparams

    for m, h in c.hparams.items():
        if m not in c.methods:
            raise _err(f"{where}.hparams.{m}", f"hyperparameters for a method not in methods ({', '.join(c.methods)})")
        try:
            resolve_hparams(m, h)
        except UserError as e:
            raise _err(f"{where}.hparams.{m}", str(e)) from None
    if c.format == "sro":
        from synth_kg import KGConfig

        if "text_format" not in KGConfig.__dataclass_fields__:
            raise _err(f"{where}.format", "the sro format needs synth_kg's text_format option (not in this version)")


def _expand_vary(raw_vary, where: str) -> list[tuple[tuple[str, Any], ...]]:
    vary = _mapping(raw_vary, where)
    axes = []
    for k, values in vary.items():
        if k not in CONDITION_KEYS:
            raise _err(f"{where}.{k}", f"unknown condition key (allowed: {', '.join(CONDITION_KEYS)})")
        if not isinstance(values, list) or not values:
            raise _err(f"{where}.{k}", f"must be a non-empty list of values, got {values!r}")
        axes.append([(k, v, i) for i, v in enumerate(values)])
    return [tuple((k, v) for k, v, _ in combo) for combo in itertools.product(*axes)] if axes else [()]


def _label(v) -> str:
    if isinstance(v, (list, tuple)):
        return "+".join(str(x) for x in v)
    return str(v)


def parse_conditions(raw, defaults: dict, seeds: tuple[int, ...] | None) -> list[Condition]:
    if not isinstance(raw, list) or not raw:
        raise _err("conditions", "must be a non-empty list of conditions")
    out: list[Condition] = []
    for i, rc in enumerate(raw):
        where = f"conditions[{i}]"
        rc = _mapping(rc, where)
        _no_unknown(rc, tuple(META_KEYS) + tuple(CONDITION_KEYS), where)
        name = _str(rc.get("name"), f"{where}.name")
        cseeds = parse_seeds(rc["seeds"], f"{where}.seeds") if "seeds" in rc else seeds
        if cseeds is None:
            raise _err(f"{where}.seeds", "no seeds: give `seeds` at the top level or in the condition")
        base = {k: defaults.get(k, d) for k, (_, d) in CONDITION_KEYS.items()}
        values = {}
        for k in CONDITION_KEYS:
            if k in rc:
                values[k] = _check_condition_value(k, rc[k], f"{where}.{k}")
            elif k in defaults:
                values[k] = defaults[k]  # validated already
            else:
                values[k] = base[k]
        for combo in _expand_vary(rc.get("vary", {}), f"{where}.vary"):
            v = dict(values)
            for k, val in combo:
                v[k] = _check_condition_value(k, val, f"{where}.vary.{k}")
            cname = "-".join([name] + [_label(v[k]) for k, _ in combo])
            cond = Condition(name=cname, seeds=cseeds, varied=tuple((k, v[k]) for k, _ in combo), **v)
            _check_condition(cond, where)
            out.append(cond)
    names = [c.name for c in out]
    for n in names:
        if names.count(n) > 1:
            raise _err("conditions", f"two conditions are named {n!r} (names, with their `vary` values, must differ)")
    return out


# -- the whole config ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepConfig:
    name: str
    conditions: tuple[Condition, ...]
    primary: Any = None  # kdel.sweep.analyses.PrimarySpec or None
    analyses: Any = None  # kdel.sweep.analyses.AnalysesSpec
    description: str = ""
    results_md: Path | None = None  # absolute (relative paths are resolved against the config file's folder)
    n_boot: int = 1000
    level: float = 0.95
    device: str = "cpu"
    source: Path | None = None

    def to_json(self) -> dict:
        return {
            "format": CONFIG_FORMAT, "name": self.name, "description": self.description,
            "conditions": [c.to_json() for c in self.conditions],
            "primary": None if self.primary is None else self.primary.to_json(),
            "analyses": self.analyses.to_json(),
            "n_boot": self.n_boot, "level": self.level, "device": self.device,
        }

    def condition(self, name: str) -> Condition:
        for c in self.conditions:
            if c.name == name:
                return c
        raise KeyError(name)


def parse_config(raw, source: Path | None = None) -> SweepConfig:
    """A SweepConfig from the parsed YAML (errors name the key, prefixed by the file name by `load_config`)."""
    from kdel.sweep.analyses import parse_analyses, parse_primary

    raw = _mapping(raw, "the config")
    _no_unknown(raw, TOP_KEYS, "")
    if "format" in raw and raw["format"] != CONFIG_FORMAT:
        raise _err("format", f"must be {CONFIG_FORMAT!r} (or left out), got {raw['format']!r}")
    name = _str(raw.get("name"), "name")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise _err("description", "must be a string")
    seeds = parse_seeds(raw["seeds"], "seeds") if "seeds" in raw else None
    rd = _mapping(raw.get("defaults", {}) or {}, "defaults")
    _no_unknown(rd, tuple(CONDITION_KEYS), "defaults")
    defaults = {k: _check_condition_value(k, v, f"defaults.{k}") for k, v in rd.items()}
    conditions = parse_conditions(raw.get("conditions"), defaults, seeds)
    primary = parse_primary(raw["primary"], conditions) if raw.get("primary") is not None else None
    analyses = parse_analyses(raw.get("analyses", {}) or {}, conditions)
    results_md = None
    if raw.get("results_md") is not None:
        p = Path(_str(raw["results_md"], "results_md"))
        if not p.is_absolute() and source is not None:
            p = source.parent / p
        results_md = p
    n_boot = _int(raw.get("n_boot", 1000), "n_boot", lo=100)
    level = _float(raw.get("level", 0.95), "level", lo=0.5, hi=0.999)
    device = _choice(raw.get("device", "cpu"), "device", ("cpu", "cuda", "auto"))
    return SweepConfig(name=name, conditions=tuple(conditions), primary=primary, analyses=analyses,
                       description=description, results_md=results_md, n_boot=n_boot, level=level, device=device,
                       source=source)


def load_config(path) -> SweepConfig:
    """Read and validate a sweep config file (UserError naming the file and the key when it is bad)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep config {path} does not exist" if not path.exists() else
                        f"sweep config {path} is not a file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    try:
        return parse_config(raw, source=path.resolve())
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def replace_condition(c: Condition, **changes) -> Condition:
    return dataclasses.replace(c, **changes)
