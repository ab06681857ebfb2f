"""Public tracing API: configure, trace facts, read effects, save and load traces (DESIGN §5)."""

from __future__ import annotations

import sys
import warnings
from dataclasses import replace

import numpy as np

from kdel.errors import UserError
from kdel.facts import Fact, FactTable
from kdel.trace.config import TraceConfig, positions_of
from kdel.trace.patch import Site, window_layers
from kdel.trace.result import SITES, FactTrace, Peak, hase_tracing_effect

__all__ = ["SITES", "FactTrace", "Peak", "TraceConfig", "hase_tracing_effect", "known_mask", "trace_fact",
           "trace_facts", "trace_many"]


def _corruption(tok, fact: Fact, table: FactTable, adapter, config: TraceConfig, sigma: float):
    from kdel.trace.corrupt import gn_corruption, str_corruption

    gn = lambda: gn_corruption(  # noqa: E731
        tok, fact, adapter.embedding_matrix(), config.noise_samples, config.noise_scale, config.seed, sigma=sigma
    )
    if config.corruption == "gn":
        return gn(), []
    try:
        return str_corruption(tok, fact, table, config.seed), []
    except UserError as e:
        if not config.fallback_to_gn:
            raise
        return gn(), [f"STR fell back to gn: {e}"]


def map_sites(config: TraceConfig, n_layers: int, length: int, subject_positions: list[int]):
    """The sites of a trace map and their cells: [(Site, component, layer, position)]."""
    out = []
    positions = positions_of(config.positions, subject_positions, length)
    for comp in config.components:
        w = 1 if comp == "resid" else config.window
        out += [(Site(comp, window_layers(layer, w, n_layers), (p,)), comp, layer, p)
                for layer in range(n_layers) for p in positions]
    return out


def fact_trace(tok, fact: Fact, corruption, setup, patched: dict, config: TraceConfig, notes) -> FactTrace:
    """A FactTrace from a fact's maps (component -> metric -> [layer x position]) and its setup (metrics
    of the clean and corrupted runs, o and o')."""
    used = replace(config, corruption=corruption.kind, components=tuple(config.components),
                   metrics=tuple(config.metrics))
    pos = corruption.clean.subject_positions
    T = len(corruption.clean.ids)
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


def _fill(cells, values, config: TraceConfig, n_layers: int, length: int) -> dict:
    """Maps component -> metric -> [layer x position]; cells not traced are nan."""
    patched = {c: {m: np.full((n_layers, length), np.nan) for m in config.metrics} for c in config.components}
    for (_, comp, layer, p), v in zip(cells, values):
        for m in config.metrics:
            patched[comp][m][layer, p] = v[m]
    return patched


def facts_per_batch(adapter, n_rows: int, length: int = 16, budget_bytes: float = 1.0e9) -> int:
    """Facts recorded together: each keeps ~4 tensors per layer of (rows, length, d) (outputs, inputs, keys,
    values), within a memory budget."""
    el = adapter.embedding_matrix().element_size()
    per_fact = (n_rows + 1) * length * adapter.d_model * el * 4 * adapter.n_layers
    return int(max(1, min(64, budget_bytes // per_fact)))


def trace_many(model, tok, facts, table: FactTable, config: TraceConfig, progress=None) -> list[FactTrace]:
    """Trace facts (without checking that the model knows them), many at a time: their clean and corrupted
    runs share two recorded forwards and their sites share batches. `progress(n)` is called per fact done."""
    from kdel.models.adapter import ModelAdapter
    from kdel.trace.corrupt import embedding_std
    from kdel.trace.engine import run_sites
    from kdel.trace.dispatch import trace_loop
    from kdel.trace.patch import build_setups

    adapter = ModelAdapter(model, tok)
    config.validate(adapter.n_layers)
    L = adapter.n_layers
    facts = list(facts)
    sigma = embedding_std(adapter.embedding_matrix())
    out: list[FactTrace] = []
    step = facts_per_batch(adapter, config.noise_samples if config.corruption == "gn" else 1)
    for i in range(0, len(facts), step):
        part = facts[i : i + step]
        made = [_corruption(tok, f, table, adapter, config, sigma) for f in part]
        corruptions = [c for c, _ in made]
        if config.method == "attribution":
            from kdel.trace.attribution import attribution_maps

            attribution = attribution_maps(adapter, corruptions, config)
            setups, maps = attribution.setups, attribution.maps
        else:
            setups = build_setups(adapter, corruptions, config.direction)
            cells = [map_sites(config, L, s.length, c.clean.subject_positions) for s, c in zip(setups, corruptions)]
            sites = [[c[0] for c in cs] for cs in cells]
            if config.batched:
                values = run_sites(setups, sites)
            else:
                values = [trace_loop(s, ss) for s, ss in zip(setups, sites)]
            maps = [_fill(cs, v, config, L, s.length) for cs, v, s in zip(cells, values, setups)]
        for f, (corr, notes), setup, m in zip(part, made, setups, maps):
            out.append(fact_trace(tok, f, corr, setup, m, config, notes))
        if progress is not None:
            progress(len(part))
    return out


def trace_fact(model, tok, fact: Fact, table: FactTable, config: TraceConfig) -> FactTrace:
    """Trace one fact: every (layer, position) site of every configured component (or the configured
    positions only)."""
    return trace_many(model, tok, [fact], table, config)[0]


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
    if not progress:
        return trace_many(model, tok, todo, table, config)
    from tqdm import tqdm

    with tqdm(total=len(todo), desc="trace", unit="fact", file=sys.stderr) as bar:
        return trace_many(model, tok, todo, table, config, progress=bar.update)
