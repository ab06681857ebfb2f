"""The audit's `--layers auto` / `--sites auto`: the same evidence-based choice as `kdel delete --layer auto`
(kdel.trace.localize through kdel.delete.layer_auto), made once per target in the parent before any case runs.

Per target: one windowed trace (`--trace-window`, default 1 for models of <= 8 layers, else about a sixth of the
layers), embedding-like layers and `--exclude-layers` never chosen; then, for each site, the layer the evidence
prefers there (`site_pick`: effect, runner-up, fallback to the family default below the minimum effect). With
`--traces DIR`, a stored trace of the target (MLP, prob, denoising) gives the choice instead, at its own window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kdel.audit.cases import AuditConfig

SITES = ("subject_last", "last")


def _reused(traces_dir, fact_ids, family: str, exclude) -> dict:
    from kdel.delete.layer_auto import choice_from_trace
    from kdel.trace import load_traces

    wanted = set(fact_ids)
    out = {}
    for t in load_traces(traces_dir):
        if t.fact_id in wanted:
            choice = choice_from_trace(t, family, exclude)
            if choice is not None:
                out[t.fact_id] = choice
    return out


def choose_for_targets(model, tok, table, fact_ids: list[int], config: AuditConfig) -> dict[int, dict[str, dict]]:
    """target -> site -> the pick at that site (kdel.delete.layer_auto.site_pick), for both sites."""
    from kdel.delete.layer_auto import choose, site_pick, warn_fallbacks
    from kdel.models.adapter import ModelAdapter

    adapter = ModelAdapter(model, tok)
    family, n_layers = adapter.arch.family, adapter.n_layers
    choices = _reused(config.traces_dir, fact_ids, family, config.exclude_layers) if config.traces_dir else {}
    todo = [fid for fid in fact_ids if fid not in choices]
    if todo:
        fresh = choose(model, tok, [table.fact(fid) for fid in todo], table, config.trace_window,
                       config.exclude_layers, config.noise_samples, config.seed)
        choices.update(zip(todo, fresh))
    picks = {fid: {s: site_pick(choices[fid], s, family, n_layers) for s in SITES} for fid in fact_ids}
    if config.layers == "auto":
        if config.sites == ("auto",):
            used, what = [picks[fid][choices[fid].site] for fid in fact_ids], "audit targets"
        else:
            used, what = [picks[fid][s] for fid in fact_ids for s in config.sites], "audit (target, site) pairs"
        warn_fallbacks(used, what)
    return picks
