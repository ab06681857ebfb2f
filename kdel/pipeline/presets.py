"""Presets of `kdel pipeline`: one dataclass holds every knob of generate → train → trace → audit → report.

| preset | graphs | entities | relations | model | methods | sites | layers | targets | cases/graph |
|--------|--------|----------|-----------|-------|---------|-------|--------|---------|-------------|
| quick  | BA, ER | 60       | auto      | tiny  | rome, r-rome | subject_last, last | auto | 2 × 5 bins | 40 |
| paper  | BA, ER | 200      | 50        | tiny  | rome, r-rome | subject_last, last | all  | 10 × 5 bins | 800 |
| test   | BA, ER | 30       | auto      | tiny  | rome, r-rome | last | auto | 1 × 3 bins | 6 |

`test` is hidden from --help: it exists so the end-to-end test finishes in a few minutes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kdel.errors import UserError


@dataclass(frozen=True)
class PipelinePreset:
    name: str
    graphs: tuple[str, ...] = ("ba", "er")  # topologies; ER gets BA's edge count (a fair comparison)
    entities: int = 60
    relations: int | str = "auto"
    ba_m: int = 3
    model_preset: str = "tiny"
    target_recall: float = 0.99
    max_steps: int = 20_000
    trace_limit: int = 20  # facts traced for the report (spread over popularity); 0 = no trace stage
    trace_components: tuple[str, ...] = ("resid", "mlp", "attn")
    methods: tuple[str, ...] = ("rome", "r-rome")
    objective: str = "erase"
    sites: tuple[str, ...] = ("subject_last", "last")
    layers: str | tuple[int, ...] = "auto"
    per_bin: int = 2
    n_bins: int = 5
    unrelated_size: int = 100
    tracing_effect: bool = True
    noise_samples: int = 10

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    def with_overrides(self, overrides: dict[str, str]) -> PipelinePreset:
        """A copy with `KEY=VALUE` overrides (strings parsed to each field's type)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        changes = {}
        for key, text in overrides.items():
            if key not in fields or key == "name":
                raise UserError(f"--set {key}: unknown preset field (fields: {', '.join(k for k in fields if k != 'name')})")
            changes[key] = _parse(key, text, getattr(self, key))
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        for g in self.graphs:
            if g not in ("ba", "er", "powerlaw"):
                raise UserError(f"unknown graph topology {g!r} in the preset: use ba, er or powerlaw")
        if len(set(self.graphs)) != len(self.graphs) or not self.graphs:
            raise UserError("the preset's graphs must be distinct and not empty")
        if self.trace_limit < 0:
            raise UserError(f"trace_limit must be >= 0, got {self.trace_limit}")


def _parse(key: str, text: str, current):
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(current, tuple):
            items = tuple(v.strip() for v in text.split(",") if v.strip())
            if key == "layers":
                return tuple(int(v) for v in items)
            return items
        if key == "layers":
            return text if text in ("auto", "all") else tuple(int(v) for v in text.split(","))
        if key == "relations":
            return text if text == "auto" else int(text)
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        return text
    except ValueError:
        raise UserError(f"--set {key}={text}: not a valid value for {key} (now {current!r})") from None


PRESETS: dict[str, PipelinePreset] = {
    "quick": PipelinePreset(name="quick"),
    "paper": PipelinePreset(name="paper", entities=200, relations=50, layers="all", per_bin=10, trace_limit=100),
    "test": PipelinePreset(name="test", entities=30, sites=("last",), per_bin=1, n_bins=3, trace_limit=4,
                           trace_components=("resid", "mlp"), unrelated_size=30, noise_samples=4),
}
PUBLIC_PRESETS = ("quick", "paper")


def get_preset(name: str) -> PipelinePreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"unknown pipeline preset {name!r}: use {' or '.join(PUBLIC_PRESETS)}") from None
