"""A fact's trace: the patched metric maps, their normalised effects, peaks and Hase's tracing effect."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kdel.errors import UserError
from kdel.trace.config import TraceConfig
from kdel.trace.metrics import indirect_effect, normalized_effect, signed_effect

SITES = ("subject_last", "last")


@dataclass(frozen=True)
class Peak:
    """The layer of the largest effect at one position, its normalised effect, and the runner-up's."""

    layer: int
    effect: float  # normalised effect (nan when the clean and corrupted values are equal)
    runner_up_layer: int | None
    runner_up_effect: float | None

    def to_json(self) -> dict:
        def num(x):
            return None if x is None or not np.isfinite(x) else round(float(x), 6)

        return {"layer": self.layer, "effect": num(self.effect), "runner_up_layer": self.runner_up_layer,
                "runner_up_effect": num(self.runner_up_effect)}


@dataclass
class FactTrace:
    fact_id: int
    tokens: list[str]
    subject_positions: list[int]
    last_subject: int
    last: int
    clean: dict[str, float]  # metric -> value on the clean prompt
    corrupted: dict[str, float]  # metric -> value on the corrupted prompt (mean over noise samples)
    patched: dict[str, dict[str, np.ndarray]]  # component -> metric -> [n_layers x n_positions]
    config: TraceConfig  # corruption = the one actually used (gn after a STR fallback)
    subject: str = ""
    target: str = ""
    prompt: str = ""
    corrupted_prompt: str = ""
    target_token: str = ""  # o's first token
    alt_token: str = ""  # o' (logit_diff's other token)
    partner_fact_id: int | None = None  # STR's partner fact
    subject_popularity: float = 0.0
    object_popularity: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def n_layers(self) -> int:
        return int(next(iter(next(iter(self.patched.values())).values())).shape[0])

    def raw(self, component: str, metric: str) -> np.ndarray:
        try:
            return self.patched[component][metric]
        except KeyError:
            raise UserError(f"this trace has no {component}/{metric} map (traced: "
                            f"{', '.join(self.patched)} x {', '.join(self.config.metrics)})") from None

    def normalized(self, component: str, metric: str) -> np.ndarray:
        """Normalised effect of §5 per [layer, position] (nan where clean == corrupted)."""
        return normalized_effect(self.raw(component, metric), self.clean[metric], self.corrupted[metric],
                                 self.config.direction)

    def indirect_effect(self, component: str) -> np.ndarray:
        """ROME's indirect effect p_patched(o) - p_*(o) per [layer, position]."""
        return indirect_effect(self.raw(component, "prob"), self.corrupted["prob"])

    def position(self, site: str) -> int:
        if site == "subject_last":
            return self.last_subject
        if site == "last":
            return self.last
        raise UserError(f"unknown site {site!r}: use subject_last or last")

    def layer_profile(self, component: str, metric: str, position: int) -> np.ndarray:
        """Normalised effect per layer at one position."""
        return self.normalized(component, metric)[:, position]

    def _column(self, component: str, metric: str, site: str) -> np.ndarray:
        raw = self.raw(component, metric)[:, self.position(site)]
        if np.isnan(raw).any():
            raise UserError(f"this trace did not trace the {site} position (positions: {self.config.positions})")
        return raw

    def peak_layer(self, site: str = "subject_last", component: str = "mlp", metric: str = "prob") -> int:
        """Layer of the largest effect at the site's position (ROME's choice of edit layer)."""
        raw = self._column(component, metric, site)
        eff = signed_effect(raw, self.clean[metric], self.corrupted[metric], self.config.direction)
        return int(np.argmax(eff))

    def peak(self, site: str = "subject_last", component: str = "mlp", metric: str = "prob") -> Peak:
        """The peak layer at the site's position with its normalised effect, and the runner-up's."""
        raw = self._column(component, metric, site)
        order = np.argsort(-signed_effect(raw, self.clean[metric], self.corrupted[metric], self.config.direction),
                          kind="stable")
        eff = normalized_effect(raw, self.clean[metric], self.corrupted[metric], self.config.direction)
        second = int(order[1]) if len(order) > 1 else None
        return Peak(int(order[0]), float(eff[order[0]]), second, None if second is None else float(eff[second]))

    @property
    def approximate(self) -> bool:
        """True for attribution patching (a linear estimate), False for exact activation patching."""
        return self.config.approximate


def hase_tracing_effect(trace: FactTrace, layer: int) -> float:
    """Hase et al.'s tracing effect at `layer`: max over tokens of max(0, (p_restored - p_*) / |p_cl - p_*|).

    From the MLP prob map of a denoising trace (callers pass a window-5 trace, as Hase et al.).
    """
    if trace.config.direction != "denoise":
        raise UserError("the tracing effect needs a denoising trace")
    p = trace.raw("mlp", "prob")
    if not 0 <= layer < p.shape[0]:
        raise UserError(f"layer {layer} is out of range: the trace has layers 0..{p.shape[0] - 1}")
    gap = abs(trace.clean["prob"] - trace.corrupted["prob"])
    if gap == 0:
        return 0.0
    return float(max(0.0, np.nanmax((p[layer] - trace.corrupted["prob"]) / gap)))
