"""What to trace: corruption, direction, components, metrics, window, method and positions (DESIGN §5)."""

from __future__ import annotations

from dataclasses import dataclass

from kdel.errors import UserError
from kdel.trace.metrics import METRICS
from kdel.trace.record import COMPONENTS

DIRECTIONS = ("denoise", "noise")
METHODS = ("exact", "attribution")
POSITIONS = ("subject", "subject_last", "last")  # every subject token, the last subject token, the last token


@dataclass
class TraceConfig:
    corruption: str = "gn"  # gn | str
    direction: str = "denoise"  # denoise | noise
    components: tuple[str, ...] = ("resid", "mlp", "attn")
    metrics: tuple[str, ...] = ("prob", "logit_diff", "logprob", "kl")
    window: int = 1  # layers patched together for mlp/attn (ROME's window); resid is always one layer
    noise_samples: int = 10
    noise_scale: float = 3.0  # gn noise std in units of the embedding matrix's std
    seed: int = 0
    batched: bool = True  # False: ROME's per-site reference loop
    fallback_to_gn: bool = False  # STR without a partner: trace with gn instead of failing
    method: str = "exact"  # exact | attribution (a gradient estimate: approximate)
    positions: tuple[str, ...] = ()  # positions traced: () = all, else names from POSITIONS

    def validate(self, n_layers: int | None = None) -> None:
        if self.corruption not in ("gn", "str"):
            raise UserError(f"unknown corruption {self.corruption!r}: use gn or str")
        if self.direction not in DIRECTIONS:
            raise UserError(f"unknown direction {self.direction!r}: use denoise or noise")
        bad = [c for c in self.components if c not in COMPONENTS]
        if bad or not self.components:
            raise UserError(f"unknown component {bad[0] if bad else '(none)'!r}: use resid, mlp, attn or all")
        bad = [m for m in self.metrics if m not in METRICS]
        if bad or not self.metrics:
            raise UserError(f"unknown metric {bad[0] if bad else '(none)'!r}: use {', '.join(METRICS)}")
        if self.noise_samples < 1:
            raise UserError(f"noise samples must be >= 1, got {self.noise_samples}")
        if not self.noise_scale > 0:
            raise UserError(f"noise scale must be > 0, got {self.noise_scale}")
        if self.window < 1:
            raise UserError(f"--window must be >= 1, got {self.window}")
        if n_layers is not None and self.window > n_layers:
            raise UserError(f"--window {self.window} is larger than the model ({n_layers} layers)")
        if self.method not in METHODS:
            raise UserError(f"unknown method {self.method!r}: use exact or attribution")
        bad = [p for p in self.positions if p not in POSITIONS]
        if bad:
            raise UserError(f"unknown position {bad[0]!r}: use {', '.join(POSITIONS)}")

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["components"] = list(self.components)
        d["metrics"] = list(self.metrics)
        d["positions"] = list(self.positions)
        return d

    @classmethod
    def from_json(cls, d: dict) -> TraceConfig:
        d = dict(d)
        d["components"] = tuple(d.get("components", COMPONENTS))
        d["metrics"] = tuple(d.get("metrics", METRICS))
        d["positions"] = tuple(d.get("positions", ()))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @property
    def approximate(self) -> bool:
        return self.method == "attribution"


def positions_of(names: tuple[str, ...], subject_positions: list[int], length: int) -> list[int]:
    """The prompt positions a config traces (all of them when `names` is empty)."""
    if not names:
        return list(range(length))
    out = set()
    for name in names:
        if name == "subject":
            out.update(subject_positions)
        elif name == "subject_last":
            out.add(max(subject_positions))
        else:
            out.add(length - 1)
    return sorted(out)
