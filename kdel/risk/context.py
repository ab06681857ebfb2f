"""Everything the risk features of many cases on one model share, computed once: the per-fact pass
(kdel.risk.base), key statistics per layer, relation vectors, object densities, tracing effects.

The target's keys come from the deletion code itself (kdel.delete.keys: the same edit texts and the same
key recording as ROME) and C from the method's own key statistics (same corpus, ridge and cache), so κ is
the transfer of the update the method would compute.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kdel.risk.base import ProbeBase, compute_base
from kdel.risk.features import (
    RANK_ONE,
    CaseFeatures,
    TargetKeys,
    build_case_features,
    object_density,
    relation_vectors,
)

HASE_WINDOW = 5  # as the audit (kdel.audit.cases.HASE_WINDOW)


@dataclass
class Case:
    """One deletion case to predict: what the audit's case spec says."""

    fact_id: int
    method: str = "rome"
    site: str = "subject_last"
    layer: int = 0
    hparams: dict = field(default_factory=dict)  # the method's resolved hyperparameters (defaults if empty)
    seed: int = 0
    tracing_effect: float | None = None  # None: computed (the audit's window-5 trace)


def method_hparams(method: str, hparams: dict | None):
    """The method's hyperparameter object with `hparams` applied (keys it does not have are ignored)."""
    from kdel.delete import get_method
    from kdel.delete.hparams import load_hparams

    cls = get_method(method).hparams_class
    if not dataclasses.is_dataclass(cls):
        return None
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    return load_hparams(cls, None, {k: v for k, v in (hparams or {}).items() if k in init})


def key_hparams(method: str, hparams: dict | None):
    """Hyperparameters that decide the target's keys and C: the method's own when it has them (ROME, r-ROME,
    MEMIT), else ROME's defaults (κ is then a feature of key overlap, not the method's exact transfer)."""
    from kdel.delete.rome.hparams import RomeHparams

    hp = method_hparams(method, hparams)
    needed = ("n_prefixes", "n_templates", "cov_ridge", "max_condition", "cov_batch_size")
    if hp is None or not all(hasattr(hp, k) for k in needed):
        return RomeHparams()
    return hp


class FeatureContext:
    """One model and fact table; computes case features, caching what cases share."""

    def __init__(self, model, tokenizer, table, cache_dir: Path | None = None, layers=None,
                 noise_samples: int = 10, trace_seed: int = 0):
        from kdel.models.adapter import ModelAdapter

        self.model, self.tok, self.table = model, tokenizer, table
        self.adapter = ModelAdapter(model, tokenizer)
        self.cache_dir = cache_dir
        self.noise_samples, self.trace_seed = noise_samples, trace_seed
        self.base: ProbeBase = compute_base(model, tokenizer, table, layers)
        self.densities = object_density(self.base.object_vec, [f.target for f in table.facts])
        self._rel: dict = {}
        self._stats: dict = {}
        self._trace: dict[int, list[float]] = {}

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers

    # -- shared pieces ---------------------------------------------------------------------------
    def relation_vectors(self, site: str, layer: int) -> tuple[dict, dict]:
        key = (site, layer)
        if key not in self._rel:
            rels = [f.relation for f in self.table.facts]
            self._rel[key] = (relation_vectors(self.base.key_at(site, layer).numpy(), rels),
                              relation_vectors(self.base.values[(site, layer)].numpy(), rels))
        return self._rel[key]

    def key_stats(self, layer: int, hp):
        from kdel.delete.covariance import key_statistics_many

        key = (layer, hp.cov_ridge, hp.max_condition)
        if key not in self._stats:
            many = key_statistics_many(self.adapter, self.tok, self.table, self.base.layers, self.cache_dir,
                                       ridge=hp.cov_ridge, max_condition=hp.max_condition,
                                       batch_size=hp.cov_batch_size)
            for lay, st in many.items():
                self._stats[(lay, hp.cov_ridge, hp.max_condition)] = st
        return self._stats[key]

    def tracing_effects(self, fact_id: int) -> list[float]:
        """Hase et al.'s tracing effect of the fact at every layer, as the audit computes it (gn, prob, window 5)."""
        if fact_id not in self._trace:
            from kdel.trace import TraceConfig, hase_tracing_effect, trace_fact

            cfg = TraceConfig(corruption="gn", direction="denoise", components=("mlp",), metrics=("prob",),
                              noise_samples=self.noise_samples, seed=self.trace_seed,
                              window=min(HASE_WINDOW, self.n_layers))
            tr = trace_fact(self.model, self.tok, self.table.fact(fact_id), self.table, cfg)
            self._trace[fact_id] = [float(hase_tracing_effect(tr, layer)) for layer in range(self.n_layers)]
        return self._trace[fact_id]

    # -- the target's side of the update --------------------------------------------------------
    def target_keys(self, case: Case) -> TargetKeys:
        """u = C⁻¹k_avg and k* as the method computes them (kdel.delete.keys), and κ of every edit text."""
        from kdel.delete import get_method
        from kdel.delete.keys import edit_texts, keys_at_site

        hp = key_hparams(case.method, case.hparams)
        fact = self.table.fact(case.fact_id)
        items = edit_texts(self.tok, self.table, fact, case.site, hp.n_prefixes, hp.n_templates, case.seed)
        keys = keys_at_site(self.adapter, self.tok, case.layer, items).cpu()
        canonical = torch.tensor([bool(it.canonical) for it in items])
        k_avg = keys.mean(dim=0)
        k_bare = keys[canonical].mean(dim=0)
        C = self.key_stats(case.layer, hp).C
        u = torch.linalg.solve(C.double(), k_avg.double())
        exact_for = getattr(type(get_method(case.method)), "exact_for", "averaged")
        k_exact = k_bare if exact_for == "bare" else k_avg
        den = float(k_exact @ u)
        return TargetKeys(u=u, k_exact=k_exact, denominator=den, kappa_items=((keys @ u) / den).numpy(),
                          exact_for=exact_for)

    def case_features(self, case: Case, groups: dict[str, list[int]] | None = None) -> CaseFeatures:
        if case.layer not in self.base.layers:
            raise ValueError(f"layer {case.layer} was not in the base pass")
        groups = groups if groups is not None else self.table.probe_groups(case.fact_id, [])
        tk = self.target_keys(case)
        te = case.tracing_effect if case.tracing_effect is not None else self.tracing_effects(case.fact_id)[case.layer]
        hp = method_hparams(case.method, case.hparams)
        margin_hp = float(getattr(hp, "margin", 2.0)) if hp is not None else 2.0
        clamp = getattr(hp, "clamp_factor", None) if hp is not None else None
        rk, rv = self.relation_vectors(case.site, case.layer)
        return build_case_features(self.base, self.table, groups, case.fact_id, case.method, case.site, case.layer,
                                   tk, te, margin_hp, clamp, self.densities, rk, rv)


def is_rank_one(method: str) -> bool:
    return method in RANK_ONE


def as_array(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)
