"""Layer and site choice from evidence: where to edit a fact, from a windowed MLP trace (issue 14, 18).

For each fact: the normalised MLP effect (gn, denoising, `prob`, window W) per layer at the last subject token
(`subject_last`) and at the last token (`last`), then:
1. *Exclusions*: a layer is embedding-like when its effect is >= `embedding_threshold` (0.9) at every subject
   token (restoring it at any single subject token restores the fact: it acts as an extended embedding, not a
   lookup); such layers and the `exclude_layers` the caller lists are never chosen, at either site.
2. *Per site*: the best remaining layer, its effect and the runner-up.
3. *Site*: a site is eligible when its best effect reaches `min_effect`. Neither: fall back (below). One: it.
   Both: `subject_last` (ROME's site: a subject key is specific to the subject, while a last-token key is shared
   by every prompt of the relation, so its edits transfer to them), unless `last`'s best effect is at least
   `site_ratio` (2) times `subject_last`'s.
4. *Fallback* (no eligible site): `subject_last` at the family's default layer, round(f x n_layers) with f from
   the published ROME/EasyEdit choices: GPT-2 0.35 (GPT-2 XL layer 17 of 48, medium 8 of 24), Llama 0.16
   (Llama-2-7B layer 5 of 32), GPT-NeoX 0.18 (the parallel-block GPT-J, layer 5 of 28); the nearest layer not
   excluded. The choice says so (`fallback`, `fallback_reason`).

Two-stage: attribution patching ranks the layers at both sites (one forward pair and one backward for all of
them), the exact tracer confirms the top k (3) of each site; both numbers are recorded. Exact-only traces every
layer at both sites. Either way the other subject tokens are traced only for layers whose effect at the last
subject token reaches the embedding threshold (no other layer can be embedding-like). Default ("auto"):
two-stage for models of >= 8k layers (24 for k = 3), exact-only below, where two-stage saves little or nothing
(measured: 12 layers 1.29x, 16 layers 1.53x, 24 layers 2.17x on random real-shape Llamas; docs/trace.md).
Window default: 1 for models of <= 8 layers, else round(n_layers / 6) (ROME's window of 10 was for 48 layers).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from kdel.errors import UserError
from kdel.trace.config import TraceConfig
from kdel.trace.metrics import normalized_effect
from kdel.trace.patch import Site, window_layers

SITE_NAMES = ("subject_last", "last")
FAMILY_DEFAULT = {"gpt2": 0.35, "llama": 0.16, "gpt_neox": 0.18}


def default_window(n_layers: int) -> int:
    return 1 if n_layers <= 8 else max(1, round(n_layers / 6))


def family_default_layer(family: str, n_layers: int, excluded=()) -> int:
    layer = min(n_layers - 1, round(FAMILY_DEFAULT.get(family, 0.35) * n_layers))
    for d in range(n_layers):  # nearest layer not excluded, upwards first
        for cand in (layer + d, layer - d):
            if 0 <= cand < n_layers and cand not in excluded:
                return cand
    raise UserError("every layer is excluded: nothing left to edit")


@dataclass
class LayerChoice:
    fact_id: int
    site: str  # subject_last | last
    layer: int
    effect: float | None  # exact normalised MLP effect at (site, layer), window `window`
    runner_up_layer: int | None
    runner_up_effect: float | None
    window: int
    excluded: dict[int, str]  # layer -> reason
    fallback: bool = False
    fallback_reason: str | None = None
    method: str = "two-stage"  # two-stage | exact
    attribution_effect: float | None = None  # two-stage: attribution's estimate at (site, layer)
    site_best: dict = field(default_factory=dict)  # site -> {"layer", "effect"} (exact), both sites compared
    attribution: dict = field(default_factory=dict)  # site -> [estimate per layer] (two-stage)
    confirmed: dict = field(default_factory=dict)  # site -> {layer: exact effect} (the layers traced exactly)
    rule: str = ""

    def to_json(self) -> dict:
        def clean(x):
            if isinstance(x, dict):
                return {str(k): clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            if isinstance(x, float):
                return round(x, 6) if np.isfinite(x) else None
            return x

        return clean(asdict(self))


def _effects(values: dict, setup, metric: str = "prob") -> float:
    return float(normalized_effect(values[metric], setup.clean[metric], setup.corrupted[metric], setup.direction))


def _decide(fact_id, effects: dict, subject_effects: dict, n_layers: int, family: str, window: int, listed,
            min_effect: float, site_ratio: float, threshold: float, method: str) -> LayerChoice:
    """effects: site -> {layer: exact effect}; subject_effects: layer -> [effect at each subject token]."""
    excluded = {layer: "listed" for layer in listed}
    for layer, effs in subject_effects.items():
        if layer not in excluded and effs and all(np.isfinite(e) and e >= threshold for e in effs):
            excluded[layer] = f"embedding-like: effect >= {threshold} at every subject token"
    best = {}
    for site in SITE_NAMES:
        ranked = sorted(((e, -layer) for layer, e in effects[site].items() if layer not in excluded and np.isfinite(e)),
                        reverse=True)
        best[site] = [(-neg, e) for e, neg in ranked[:2]]
    eligible = [s for s in SITE_NAMES if best[s] and best[s][0][1] >= min_effect]
    site_best = {s: ({"layer": best[s][0][0], "effect": best[s][0][1]} if best[s] else None) for s in SITE_NAMES}
    common = dict(fact_id=fact_id, window=window, excluded=excluded, method=method, site_best=site_best)
    if not eligible:
        layer = family_default_layer(family, n_layers, excluded)
        reason = (f"no layer reaches the minimum effect {min_effect} at either site (best: "
                  + ", ".join(f"{s} {site_best[s]['effect']:.3f}" if site_best[s] else f"{s} none" for s in SITE_NAMES)
                  + f"); {family} default layer")
        eff = effects["subject_last"].get(layer)
        return LayerChoice(site="subject_last", layer=layer, effect=eff, runner_up_layer=None, runner_up_effect=None,
                           fallback=True, fallback_reason=reason, rule="fallback", **common)
    if len(eligible) == 1:
        site, rule = eligible[0], f"only {eligible[0]} reaches the minimum effect {min_effect}"
    elif best["last"][0][1] >= site_ratio * best["subject_last"][0][1]:
        site, rule = "last", f"last's effect is >= {site_ratio}x subject_last's"
    else:
        site, rule = "subject_last", f"both eligible; last's effect is < {site_ratio}x subject_last's"
    (layer, eff), *rest = best[site]
    return LayerChoice(site=site, layer=layer, effect=eff, runner_up_layer=rest[0][0] if rest else None,
                       runner_up_effect=rest[0][1] if rest else None, rule=rule, **common)


def choose_site_layers(model, tok, facts, table, window: int | None = None, exclude_layers=(),
                       min_effect: float = 0.1, two_stage: bool | str = "auto", top_k: int = 3, site_ratio: float = 2.0,
                       embedding_threshold: float = 0.9, config: TraceConfig | None = None,
                       timings: dict | None = None) -> list[LayerChoice]:
    """The edit site and layer of each fact (see the module docstring). `config` sets the corruption, noise
    samples and seed of the traces (its components, metrics, window and positions are overridden).
    `two_stage="auto"`: two-stage when the model has at least 8 x top_k layers, else exact-only (on smaller
    models confirming k layers per site is a large part of all of them, and the exact tracer alone costs about
    as much). `timings`, when given, gets the CPU seconds of each part added to it: `recorded_runs` (clean and
    corrupted runs; two-stage: the clean runs only), `attribution` (two-stage: its forward, which also records
    the corrupted runs, and backward), `confirmed` (exact effects)."""
    import time
    from kdel.models.adapter import ModelAdapter
    from kdel.trace.api import _corruption
    from kdel.trace.attribution import attribution_maps
    from kdel.trace.corrupt import embedding_std
    from kdel.trace.patch import build_setups
    from kdel.trace.record import record_runs

    adapter = ModelAdapter(model, tok)
    L = adapter.n_layers
    window = default_window(L) if window is None else window
    listed = sorted(set(int(x) for x in exclude_layers))
    bad = [x for x in listed if not 0 <= x < L]
    if bad:
        raise UserError(f"--exclude-layers: layer {bad[0]} is out of range: this model has layers 0..{L - 1}")
    if top_k < 1:
        raise UserError(f"top k must be >= 1, got {top_k}")
    if two_stage == "auto":
        two_stage = L >= 8 * top_k
    base = config or TraceConfig()
    cfg = TraceConfig(**{**base.__dict__, "components": ("mlp",), "metrics": ("prob",), "window": window,
                         "positions": (), "method": "exact"})
    cfg.validate(L)
    facts = list(facts)
    clock = time.process_time()

    def lap(part: str) -> None:
        nonlocal clock
        now = time.process_time()
        if timings is not None:
            timings[part] = timings.get(part, 0.0) + now - clock
        clock = now

    sigma = embedding_std(adapter.embedding_matrix())
    corrs = [_corruption(tok, f, table, adapter, cfg, sigma)[0] for f in facts]
    positions = [{"subject_last": max(c.clean.subject_positions), "last": len(c.clean.ids) - 1} for c in corrs]
    subjects = [[q for q in c.clean.subject_positions if q != max(c.clean.subject_positions)] for c in corrs]
    subjects = [[max(c.clean.subject_positions)] + rest for c, rest in zip(corrs, subjects)]  # the last one first
    attr = None
    if two_stage and cfg.direction == "denoise":  # attribution's forward records the corrupted runs too
        clean = record_runs(adapter, [c.clean for c in corrs])
        lap("recorded_runs")
        attribution = attribution_maps(adapter, corrs, cfg, clean=clean, record_base=True)
        setups = build_setups(adapter, corrs, cfg.direction, recorded=(clean, attribution.base_run))
    else:
        setups = build_setups(adapter, corrs, cfg.direction)
        lap("recorded_runs")
        if two_stage:
            attribution = attribution_maps(adapter, corrs, cfg, clean=setups[0].base_run)  # noising: clean
    if two_stage:
        attr = [{s: normalized_effect(m["mlp"]["prob"][:, pos[s]], a.clean["prob"], a.corrupted["prob"],
                                      cfg.direction) for s in SITE_NAMES}
                for a, m, pos in zip(attribution.setups, attribution.maps, positions)]
        lap("attribution")
    todo = [{s: (list(range(L)) if attr is None else _ranked(attr[i][s], listed)) for s in SITE_NAMES}
            for i in range(len(facts))]
    known: list[dict] = [{} for _ in facts]  # (layer, position) -> exact effect
    choices: list[LayerChoice | None] = [None] * len(facts)
    k = L if attr is None else top_k
    rnd = 0
    while any(c is None for c in choices):
        open_ = [i for i, c in enumerate(choices) if c is None]
        want = {i: {s: todo[i][s][rnd * k:(rnd + 1) * k] for s in SITE_NAMES} for i in open_}
        _confirm(setups, known, {i: [(layer, positions[i][s]) for s in SITE_NAMES for layer in want[i][s]]
                                 for i in open_}, window, L)
        # the embedding test needs the other subject tokens only where the last one already reaches the threshold
        _confirm(setups, known, {i: [(layer, q) for layer in want[i]["subject_last"] for q in subjects[i]
                                     if known[i][(layer, subjects[i][0])] >= embedding_threshold]
                                 for i in open_}, window, L)
        lap("confirmed")
        rnd += 1
        for i in open_:
            effects = {s: {layer: e for (layer, p), e in known[i].items() if p == positions[i][s]} for s in SITE_NAMES}
            subj = {layer: [known[i].get((layer, q), np.nan) for q in subjects[i]] for layer in effects["subject_last"]}
            c = _decide(facts[i].id, effects, subj, L, adapter.arch.family, window, listed, min_effect,
                        site_ratio, embedding_threshold, "exact" if attr is None else "two-stage")
            exhausted = rnd * k >= L
            starved = any(not any(layer not in c.excluded for layer in effects[s]) for s in SITE_NAMES)
            if exhausted or attr is None or not (c.fallback or starved):  # two-stage: widen before giving up
                if attr is not None:
                    c.attribution = {s: [float(x) for x in attr[i][s]] for s in SITE_NAMES}
                    c.attribution_effect = float(attr[i][c.site][c.layer])
                c.confirmed = {s: dict(sorted(effects[s].items())) for s in SITE_NAMES}
                choices[i] = c
    return choices  # type: ignore[return-value]


def _confirm(setups, known: list[dict], requests: dict[int, list], window: int, n_layers: int) -> None:
    """Exact MLP effects (window `window`) of the requested (layer, position) cells not yet known."""
    from kdel.trace.engine import run_sites

    todo = {i: [lp for lp in dict.fromkeys(req) if lp not in known[i]] for i, req in requests.items()}
    if not any(todo.values()):
        return
    sites = [[Site("mlp", window_layers(layer, window, n_layers), (p,)) for layer, p in todo.get(i, [])]
             for i in range(len(setups))]
    for i, vs in enumerate(run_sites(setups, sites)):
        for lp, v in zip(todo.get(i, []), vs):
            known[i][lp] = _effects(v, setups[i])


def _ranked(estimates: np.ndarray, listed) -> list[int]:
    """Layers by decreasing attribution estimate (listed exclusions last; nan as -inf)."""
    est = np.where(np.isfinite(estimates), estimates, -np.inf)
    order = sorted(range(len(est)), key=lambda layer: (layer in listed, -est[layer], layer))
    return order


def choose_site_layer(model, tok, fact, table, **kw) -> LayerChoice:
    """`choose_site_layers` for one fact."""
    return choose_site_layers(model, tok, [fact], table, **kw)[0]
