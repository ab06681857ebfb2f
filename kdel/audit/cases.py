"""Audit configuration and the deterministic list of deletion cases (DESIGN §7, §9, §12).

Targets are sampled per popularity bin (of the subject, or of the object), seeded, among the facts the
model recalls before any edit; each target × method × site × layer is one `CaseSpec`. The case id is a
hash of (fact ids, method, objective, layer, site, hyperparameters, seed), so the same case always has
the same file name and a rerun can skip it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import warnings
from dataclasses import dataclass, field
from typing import Any

from kdel.errors import UserError

STRATIFY = ("subject", "object")
SITES = ("subject_last", "last")
VERIFY_REVERT = ("touched", "full")
HASE_WINDOW = 5  # Hase et al.'s tracing effect: MLP tracing with a window of 5 layers


@dataclass
class AuditConfig:
    methods: tuple[str, ...] = ("rome",)
    objective: str = "erase"
    sites: tuple[str, ...] = ("subject_last", "last")  # both: toy models look facts up at the last token
    layers: str | tuple[int, ...] = "auto"  # "auto" (traced MLP peak at the site), "all", or explicit layers
    per_bin: int = 2  # targets sampled per popularity bin
    n_bins: int = 5
    stratify: str = "subject"  # popularity bins of the subject or of the object
    unrelated_size: int = 100  # the run's fixed `unrelated` sample (DESIGN §12)
    seed: int = 0
    hparams: dict[str, dict] = field(default_factory=dict)  # method -> hyperparameter overrides
    traces_dir: str | None = None  # reuse a `kdel trace` run for layers=auto peaks
    tracing_effect: bool = True  # compute Hase et al.'s tracing effect (window-5 MLP trace per target)
    noise_samples: int = 10  # gn noise samples for the audit's own traces
    fact_ids: tuple[int, ...] | None = None  # explicit targets instead of stratified sampling
    verify_revert: str = "touched"  # "touched": the edited tensors equal the snapshot; "full": whole-model hash
    primary: str | dict | None = None  # the one pre-declared hypothesis (kdel.audit.primary); None = the default
    title: str | None = None  # the report's title
    trace_window: int | None = None  # layers/sites auto: the choice's trace window (None: 1 if <= 8 layers, ~L/6)
    exclude_layers: tuple[int, ...] = ()  # never chosen by layers=auto; left out of layers=all
    fluency: bool | None = None  # fluency per case; None: on for models kdel did not train (run_audit decides)

    @property
    def needs_choice(self) -> bool:
        """Whether cases need the evidence-based choice (layers auto, or sites auto)."""
        return self.layers == "auto" or self.sites == ("auto",)

    def fluency_json(self) -> dict:
        """The fluency settings that decide a case's result (part of every case's fingerprint)."""
        from kdel.models.fluency import FluencyConfig

        c = FluencyConfig()
        return {"on": bool(self.fluency), "max_ppl_ratio": c.max_ppl_ratio, "max_entropy_drop": c.max_entropy_drop,
                "max_new_tokens": c.max_new_tokens, "heldout_tokens": c.heldout_tokens}

    def validate(self) -> None:
        from kdel.delete import list_methods
        from kdel.delete.objectives import check_objective

        if not self.methods:
            raise UserError("--methods is empty: name at least one deletion method")
        known = list_methods()
        for m in self.methods:
            if m not in known:
                raise UserError(f"unknown method {m!r}: choose from {', '.join(known)}")
        if len(set(self.methods)) != len(self.methods):
            raise UserError("--methods names a method twice")
        check_objective(self.objective)
        if self.primary is not None:
            from kdel.audit.primary import parse_primary

            parse_primary(self.primary)
        if not self.sites:
            raise UserError("--sites is empty: use auto, or subject_last and/or last")
        for s in self.sites:
            if s not in (*SITES, "auto"):
                raise UserError(f"unknown edit site {s!r}: use auto, subject_last or last")
        if "auto" in self.sites and len(self.sites) > 1:
            raise UserError("--sites auto chooses the site per fact: give it alone")
        if len(set(self.sites)) != len(self.sites):
            raise UserError("--sites names a site twice")
        if isinstance(self.layers, str):
            if self.layers not in ("auto", "all"):
                raise UserError(f"--layers must be auto, all or a comma-separated list of layers, got {self.layers!r}")
        else:
            if not self.layers:
                raise UserError("--layers is empty")
            for layer in self.layers:
                if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
                    raise UserError(f"--layers: {layer!r} is not a layer index (>= 0)")
        if self.per_bin < 1:
            raise UserError(f"--per-bin must be >= 1, got {self.per_bin}")
        if self.n_bins < 1:
            raise UserError(f"--bins must be >= 1, got {self.n_bins}")
        if self.stratify not in STRATIFY:
            raise UserError(f"--stratify must be subject or object, got {self.stratify!r}")
        if self.unrelated_size < 1:  # `wrecked` (unrelated accuracy after < 0.9) needs an unrelated sample
            raise UserError(f"--unrelated must be >= 1 (the wrecked-model check needs unrelated facts), "
                            f"got {self.unrelated_size}")
        if self.seed < 0:
            raise UserError(f"--seed must be >= 0, got {self.seed}")
        if self.noise_samples < 1:
            raise UserError(f"noise samples must be >= 1, got {self.noise_samples}")
        if self.trace_window is not None and (isinstance(self.trace_window, bool) or self.trace_window < 1):
            raise UserError(f"--trace-window must be >= 1, got {self.trace_window}")
        for layer in self.exclude_layers:
            if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
                raise UserError(f"--exclude-layers: {layer!r} is not a layer index (>= 0)")
        if self.fluency not in (None, True, False):
            raise UserError(f"fluency must be true, false or null (automatic), got {self.fluency!r}")
        if self.verify_revert not in VERIFY_REVERT:
            raise UserError(f"verify_revert must be touched or full, got {self.verify_revert!r}")
        for m in self.hparams:
            if m not in self.methods:
                raise UserError(f"hyperparameters given for {m!r}, which is not in --methods")
        self.resolved_hparams()  # builds each method's hyperparameters: bad keys/values fail here

    def resolved_hparams(self) -> dict[str, dict]:
        """method -> its resolved hyperparameters as JSON (defaults < overrides), computed once per config.

        The case specs carry these dicts; executors build the methods from the specs (`method_from_spec`)."""
        key = json.dumps(self.hparams, sort_keys=True, default=str) + "|" + ",".join(self.methods)
        cached = self.__dict__.get("_resolved")
        if cached is None or cached[0] != key:
            cached = (key, {m: resolve_hparams(m, self.hparams.get(m))[1] for m in self.methods})
            self.__dict__["_resolved"] = cached
        return cached[1]

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["methods"] = list(self.methods)
        d["sites"] = list(self.sites)
        d["layers"] = self.layers if isinstance(self.layers, str) else list(self.layers)
        d["fact_ids"] = None if self.fact_ids is None else list(self.fact_ids)
        d["exclude_layers"] = list(self.exclude_layers)
        return d

    @classmethod
    def from_json(cls, d: dict) -> AuditConfig:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("methods", "sites"):
            if k in d:
                d[k] = tuple(d[k])
        if isinstance(d.get("layers"), list):
            d["layers"] = tuple(d["layers"])
        if d.get("fact_ids") is not None:
            d["fact_ids"] = tuple(d["fact_ids"])
        if "exclude_layers" in d:
            d["exclude_layers"] = tuple(d["exclude_layers"])
        return cls(**d)


def resolve_hparams(method: str, overrides: dict | None):
    """(hyperparameter object, its JSON dict) of `method` with `overrides` applied and validated."""
    from kdel.delete import get_method
    from kdel.delete.hparams import load_hparams

    cls = get_method(method).hparams_class
    hp = load_hparams(cls, None, overrides or {})
    return hp, _jsonable(dataclasses.asdict(hp) if dataclasses.is_dataclass(hp) else {})


def method_from_spec(method: str, hparams: dict):
    """The deletion method `method` with the resolved hyperparameters a case spec carries (no defaults or
    overrides are applied again: the spec's dict is the complete, validated set)."""
    from kdel.delete import get_method
    from kdel.delete.hparams import load_hparams

    cls = get_method(method).hparams_class
    if not dataclasses.is_dataclass(cls):
        return get_method(method)
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    return get_method(method, load_hparams(cls, None, {k: v for k, v in hparams.items() if k in init}))


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, sort_keys=True, default=str))


def case_id_for(fact_ids, method: str, objective: str, layer: int, site: str, hparams: dict, seed: int) -> str:
    key = {
        "fact_ids": list(fact_ids),
        "method": method,
        "objective": objective,
        "layer": layer,
        "site": site,
        "hparams": hparams,
        "seed": seed,
    }
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class CaseSpec:
    """One deletion case: what to delete, with which method, where; plus the facts' trace data."""

    case_id: str
    fact_ids: list[int]
    method: str
    objective: str
    layer: int
    site: str
    hparams: dict
    seed: int
    new_targets: list[str] | None = None
    layer_source: str = "list"  # auto | all | list
    peak_layers: dict[str, int | None] = field(default_factory=dict)  # site -> traced MLP peak layer
    tracing_effect: float | None = None  # Hase et al.'s, at `layer` (window 5)
    subject_bin: int = 0
    object_bin: int = 0
    layer_choice: dict | None = None  # layers/sites auto: the evidence (kdel.delete.layer_auto.site_pick)

    def to_json(self) -> dict:
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, d: dict) -> CaseSpec:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def spec_record(self):
        """The `spec` section of a case file (what identifies and reproduces the case)."""
        from kdel.audit.schema import SpecRecord

        return SpecRecord(fact_ids=list(self.fact_ids), method=self.method, objective=self.objective,
                          layer=self.layer, site=self.site, hparams=self.hparams, seed=self.seed,
                          new_targets=self.new_targets, layer_source=self.layer_source)

    def spec_json(self) -> dict:
        return self.spec_record().to_json()


def popularity_bins(table, n_bins: int) -> tuple[list[int], list[int]]:
    return table.subject_bins(n_bins), table.object_bins(n_bins)


def sample_targets(table, recalled, config: AuditConfig) -> list[int]:
    """Fact ids to delete: `per_bin` per popularity bin, seeded, among facts recalled before (sorted per bin)."""
    if config.fact_ids is not None:
        for fid in config.fact_ids:
            table.fact(fid)
        return list(config.fact_ids)
    bins = table.subject_bins(config.n_bins) if config.stratify == "subject" else table.object_bins(config.n_bins)
    rng = random.Random(config.seed)
    out: list[int] = []
    for b in range(config.n_bins):
        eligible = [f.id for f in table.facts if bins[f.id] == b and bool(recalled[f.id])]
        out += sorted(rng.sample(eligible, min(config.per_bin, len(eligible))))
    if not out:
        raise UserError("the model recalls none of the facts: nothing to delete (is it trained on this KG?)")
    return out


@dataclass
class TraceInfo:
    peak_layers: dict[str, int | None]  # site -> the layer chosen at that site (layers/sites auto)
    tracing_effect_by_layer: list[float] | None
    picks: dict[str, dict] | None = None  # site -> kdel.delete.layer_auto.site_pick (the evidence)

    @property
    def chosen_site(self) -> str | None:
        return None if not self.picks else next(iter(self.picks.values()))["chosen_site"]


def trace_targets(model, tok, table, fact_ids: list[int], config: AuditConfig, n_layers: int,
                  need_peaks: bool, progress: bool = False) -> dict[int, TraceInfo]:
    """The layer (and site) choice from evidence per target (kdel.audit.choice: a windowed trace, embedding-like
    and --exclude-layers layers never chosen) and Hase's tracing effect per layer (window 5)."""
    out = {fid: TraceInfo({s: None for s in SITES}, None) for fid in fact_ids}
    if not need_peaks and not config.tracing_effect:
        return out
    try:
        from kdel.trace import TraceConfig, hase_tracing_effect, trace_fact
    except ImportError as e:  # the tracing stage is missing from this build
        if need_peaks:
            raise UserError(f"--layers auto needs the tracing stage (kdel.trace), which is unavailable: {e}") from None
        warnings.warn(f"tracing stage unavailable, tracing effects left empty ({e})", stacklevel=2)
        return out
    if need_peaks:
        from kdel.audit.choice import choose_for_targets

        for fid, picks in choose_for_targets(model, tok, table, fact_ids, config).items():
            out[fid].picks = picks
            out[fid].peak_layers = {s: picks[s]["layer"] for s in SITES}
    if not config.tracing_effect:
        return out
    base = dict(corruption="gn", direction="denoise", components=("mlp",), metrics=("prob",),
                noise_samples=config.noise_samples, seed=config.seed)
    it = fact_ids
    if progress:
        import sys

        from tqdm import tqdm

        it = tqdm(fact_ids, desc="trace targets", unit="fact", file=sys.stderr)
    for fid in it:
        t5 = trace_fact(model, tok, table.fact(fid), table, TraceConfig(window=min(HASE_WINDOW, n_layers), **base))
        out[fid].tracing_effect_by_layer = [float(hase_tracing_effect(t5, layer)) for layer in range(n_layers)]
    return out


def layers_for(config: AuditConfig, info: TraceInfo, site: str, n_layers: int) -> list[int]:
    if config.layers == "auto":
        peak = info.peak_layers.get(site)
        if peak is None:
            raise RuntimeError("layers=auto without a traced peak")
        return [peak]
    if config.layers == "all":
        return [layer for layer in range(n_layers) if layer not in config.exclude_layers]
    for layer in config.layers:
        if layer >= n_layers:
            raise UserError(f"--layers: layer {layer} is out of range: this model has layers 0..{n_layers - 1}")
    return sorted(set(config.layers))


def sites_for(config: AuditConfig, info: TraceInfo, method_uses_site: bool) -> list[str]:
    """The sites a target is edited at: the configured ones, or the chosen one (sites auto); one only for a
    method that ignores the site (its cases would be duplicates)."""
    sites = [info.chosen_site] if config.sites == ("auto",) else list(config.sites)
    if None in sites:
        raise RuntimeError("sites=auto without a layer choice")
    return sites if method_uses_site else sites[:1]


def build_cases(table, targets: list[int], traces: dict[int, TraceInfo], config: AuditConfig,
                n_layers: int) -> list[CaseSpec]:
    """The deterministic case list: targets (in sampling order) × methods × sites × layers."""
    from kdel.delete import get_method
    from kdel.delete.layer_auto import uses_site
    from kdel.delete.objectives import new_targets_for

    sbins, obins = popularity_bins(table, config.n_bins)
    source = config.layers if isinstance(config.layers, str) else "list"
    hparams = config.resolved_hparams()
    site_used = {m: uses_site(get_method(m)) for m in config.methods}
    specs: list[CaseSpec] = []
    seen: set[str] = set()
    for fid in targets:
        fact = table.fact(fid)
        new = new_targets_for(config.objective, [fact], table, seed=config.seed)
        info = traces[fid]
        for method in config.methods:
            for site in sites_for(config, info, site_used[method]):
                for layer in layers_for(config, info, site, n_layers):
                    cid = case_id_for([fid], method, config.objective, layer, site, hparams[method], config.seed)
                    if cid in seen:
                        continue
                    seen.add(cid)
                    te = info.tracing_effect_by_layer[layer] if info.tracing_effect_by_layer else None
                    specs.append(CaseSpec(
                        case_id=cid, fact_ids=[fid], method=method, objective=config.objective, layer=layer,
                        site=site, hparams=hparams[method], seed=config.seed, new_targets=new,
                        layer_source=source, peak_layers=dict(info.peak_layers), tracing_effect=te,
                        subject_bin=int(sbins[fid]), object_bin=int(obins[fid]),
                        layer_choice=dict(info.picks[site]) if info.picks else None,
                    ))
    return specs
