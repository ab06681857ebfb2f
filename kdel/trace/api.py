"""Public tracing API: configure, trace facts, read effects, save and load traces (DESIGN §5)."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from kdel.errors import UserError
from kdel.facts import Fact, FactTable
from kdel.trace.metrics import METRICS, indirect_effect, normalized_effect, signed_effect
from kdel.trace.patch import COMPONENTS, DIRECTIONS, Site, window_layers

SITES = ("subject_last", "last")


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

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["components"] = list(self.components)
        d["metrics"] = list(self.metrics)
        return d

    @classmethod
    def from_json(cls, d: dict) -> TraceConfig:
        d = dict(d)
        d["components"] = tuple(d.get("components", COMPONENTS))
        d["metrics"] = tuple(d.get("metrics", METRICS))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


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

    def peak_layer(self, site: str = "subject_last", component: str = "mlp", metric: str = "prob") -> int:
        """Layer of the largest effect at the site's position (ROME's choice of edit layer)."""
        raw = self.raw(component, metric)[:, self.position(site)]
        eff = signed_effect(raw, self.clean[metric], self.corrupted[metric], self.config.direction)
        return int(np.argmax(eff))


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
    return float(max(0.0, np.max((p[layer] - trace.corrupted["prob"]) / gap)))


def _corruption(tok, fact: Fact, table: FactTable, adapter, config: TraceConfig):
    from kdel.trace.corrupt import gn_corruption, str_corruption

    gn = lambda: gn_corruption(  # noqa: E731
        tok, fact, adapter.embedding_matrix(), config.noise_samples, config.noise_scale, config.seed
    )
    if config.corruption == "gn":
        return gn(), []
    try:
        return str_corruption(tok, fact, table, config.seed), []
    except UserError as e:
        if not config.fallback_to_gn:
            raise
        return gn(), [f"STR fell back to gn: {e}"]


def trace_fact(model, tok, fact: Fact, table: FactTable, config: TraceConfig) -> FactTrace:
    """Trace one fact: every (layer, position) site of every configured component."""
    from kdel.models.adapter import ModelAdapter
    from kdel.trace.patch import build_setup, trace_batched, trace_loop

    adapter = ModelAdapter(model, tok)
    config.validate(adapter.n_layers)
    corruption, notes = _corruption(tok, fact, table, adapter, config)
    setup = build_setup(adapter, corruption, config.direction)
    T = len(corruption.clean.ids)
    L = adapter.n_layers
    sites = []
    for comp in config.components:
        w = 1 if comp == "resid" else config.window
        sites += [Site(comp, window_layers(layer, w, L), (p,)) for layer in range(L) for p in range(T)]
    values = (trace_batched if config.batched else trace_loop)(setup, sites)
    patched: dict[str, dict[str, np.ndarray]] = {}
    k = 0
    for comp in config.components:
        patched[comp] = {m: np.zeros((L, T), dtype=np.float64) for m in config.metrics}
        for layer in range(L):
            for p in range(T):
                for m in config.metrics:
                    patched[comp][m][layer, p] = values[k][m]
                k += 1
    used = replace(config, corruption=corruption.kind, components=tuple(config.components),
                   metrics=tuple(config.metrics))
    pos = corruption.clean.subject_positions
    return FactTrace(
        fact_id=fact.id,
        tokens=[str(t) for t in tok.convert_ids_to_tokens(corruption.clean.ids)],
        subject_positions=list(pos),
        last_subject=int(max(pos)),
        last=T - 1,
        clean={m: setup.clean[m] for m in config.metrics},
        corrupted={m: setup.corrupted[m] for m in config.metrics},
        patched=patched,
        config=used,
        subject=fact.subject,
        target=fact.target,
        prompt=fact.prompt,
        corrupted_prompt=corruption.corrupted_prompt,
        target_token=str(tok.convert_ids_to_tokens(setup.target_id)),
        alt_token=str(tok.convert_ids_to_tokens(setup.alt_id)),
        partner_fact_id=corruption.partner_fact_id,
        subject_popularity=fact.subject_popularity,
        object_popularity=fact.object_popularity,
        notes=notes,
    )


def known_mask(model, tok, facts: list[Fact]) -> np.ndarray:
    """Whether the model recalls each fact's whole object from its canonical prompt (§12)."""
    from kdel.models.scoring import score_targets

    if not facts:
        return np.zeros(0, dtype=bool)
    return score_targets(model, tok, [f.prompt for f in facts], [f.target for f in facts]).recalled


def trace_facts(model, tok, facts, table: FactTable, config: TraceConfig, progress: bool = True,
                strict: bool = False, skipped: list | None = None) -> list[FactTrace]:
    """Trace many facts. Facts the model does not recall are skipped with a warning (an error if strict);
    their ids are appended to `skipped` when given."""
    from kdel.models.adapter import ModelAdapter

    facts = list(facts)
    config.validate(ModelAdapter(model, tok).n_layers)
    known = known_mask(model, tok, facts)
    unknown = [f.id for f, k in zip(facts, known) if not k]
    if unknown and strict:
        raise UserError(f"the model does not recall fact {unknown[0]} ({len(unknown)} unknown facts in all); "
                        f"drop --strict to skip them")
    if unknown:
        warnings.warn(f"skipping {len(unknown)} facts the model does not recall: ids {unknown[:10]}"
                      f"{' ...' if len(unknown) > 10 else ''}", stacklevel=2)
        if skipped is not None:
            skipped.extend(unknown)
    todo = [f for f, k in zip(facts, known) if k]
    it = todo
    if progress:
        from tqdm import tqdm

        it = tqdm(todo, desc="trace", unit="fact", file=sys.stderr)
    return [trace_fact(model, tok, f, table, config) for f in it]
