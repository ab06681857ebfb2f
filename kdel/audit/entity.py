"""The entity audit (`kdel audit --forget-entities K --bins B`): forget whole entities, sampled across
popularity bins, and relate the side effects of forgetting an entity to its degree.

Sampling: the candidates are the entities that are the subject of at least one fact the unedited model recalls
(canonical prompt); they are put in B rank-quantile bins of their degree (ties by name), and K entities are
drawn (seeded) spread evenly over the bins (K // B per bin, one more in the first K % B bins; a bin with fewer
candidates gives all it has). Each sampled entity × method × site × layer is one case: every fact of the entity
is deleted (`kdel.forget`: one after another for rome/r-rome, one batch otherwise), measured on the entity's
probe groups (kdel.forget.entity) with the extraction check, and reverted (the weights hash is checked).

Files, inside the audit directory OUT (one writer: the audit's lock):
  OUT/entities/config.json         kdel-entity-audit-config/1
  OUT/entities/cases/<id>.json     kdel-entity-case/1, fingerprinted like case files (kdel.audit.resume)
  OUT/entities/superseded/         files a resume could not reuse
  OUT/entities/summary.json        kdel-entity-summary/1 (kdel.audit.entity_summary)
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kdel.errors import UserError

CASE_FORMAT = "kdel-entity-case/1"
CONFIG_FORMAT = "kdel-entity-audit-config/1"
ENTITY_DIR = "entities"


@dataclass
class EntityAuditConfig:
    n_entities: int
    n_bins: int = 5
    methods: tuple[str, ...] = ("rome",)
    objective: str = "erase"
    sites: tuple[str, ...] = ("last",)
    layers: tuple = (None,)  # None: the method's default layer
    as_object: bool = False
    mode: str = "auto"
    unrelated_size: int = 100
    candidates: int = 20  # extraction check
    seed: int = 0
    hparams: dict = field(default_factory=dict)

    @classmethod
    def from_audit(cls, audit, n_entities: int, as_object: bool = False):
        if audit.layers == "all":
            raise UserError("--layers all is for the single-fact audit; give --layers auto or a list of layers")
        layers = (None,) if audit.layers == "auto" else tuple(audit.layers)
        return cls(n_entities=n_entities, n_bins=audit.n_bins, methods=tuple(audit.methods),
                   objective=audit.objective, sites=tuple(audit.sites), layers=layers, as_object=as_object,
                   unrelated_size=audit.unrelated_size, seed=audit.seed, hparams=dict(audit.hparams))

    def validate(self) -> None:
        if self.n_entities < 1:
            raise UserError(f"--forget-entities must be >= 1, got {self.n_entities}")
        if self.n_bins < 1:
            raise UserError(f"--bins must be >= 1, got {self.n_bins}")

    def to_json(self) -> dict:
        return {"n_entities": self.n_entities, "n_bins": self.n_bins, "methods": list(self.methods),
                "objective": self.objective, "sites": list(self.sites), "layers": list(self.layers),
                "as_object": self.as_object, "mode": self.mode, "unrelated_size": self.unrelated_size,
                "candidates": self.candidates, "seed": self.seed, "hparams": self.hparams}


def sample_entities(table, recalled, n: int, n_bins: int, seed: int) -> list[dict]:
    """[{name, degree, bin}] of the sampled entities (module docstring), in bin then name order."""
    from synth_kg import rank_quantile_bins

    known = sorted({table.fact(int(i)).subject for i in recalled})
    if not known:
        raise UserError("the model recalls no fact: there is no entity to forget")
    degree = {}
    for f in table.facts:
        if f.subject in known:
            degree[f.subject] = float(f.subject_popularity)
    bins = rank_quantile_bins([degree[e] for e in known], n_bins, known)
    rng = random.Random(seed)
    picked = []
    for b in range(n_bins):
        members = [e for e, k in zip(known, bins) if k == b]
        quota = n // n_bins + (1 if b < n % n_bins else 0)
        for e in sorted(rng.sample(members, min(quota, len(members)))):
            picked.append({"name": e, "degree": degree[e], "bin": b})
    return picked


def plan_cases(config: EntityAuditConfig, table, entities: list[dict]) -> list[dict]:
    from kdel.audit.cases import resolve_hparams
    from kdel.audit.resume import unit_id
    from kdel.audit.sequential import uses_site
    from kdel.forget.entity import entity_fact_ids

    specs = []
    hps = {m: resolve_hparams(m, config.hparams.get(m))[1] for m in config.methods}
    for e in entities:
        ids = entity_fact_ids(table, e["name"], config.as_object)
        for method in config.methods:
            for site in (config.sites if uses_site(method) else config.sites[:1]):
                for layer in config.layers:
                    spec = {"entity": e["name"], "entity_degree": e["degree"], "bin": e["bin"],
                            "n_bins": config.n_bins, "fact_ids": ids, "method": method,
                            "objective": config.objective, "site": site, "layer": layer,
                            "as_object": config.as_object, "mode": config.mode, "seed": config.seed,
                            "candidates": config.candidates, "hparams": hps[method]}
                    spec["id"] = unit_id(spec)
                    specs.append(spec)
    return specs


def run_entity_audit(model_dir, table, out_dir, config: EntityAuditConfig, progress: bool = True,
                     device: str = "cpu", kg_dir=None, corpus=None, recompute: bool = True, inputs=()) -> dict:
    """Run (or resume) the entity audit; returns the summary (also OUT/entities/summary.json)."""
    from kdel.audit.store import run_locked

    return run_locked(_run_locked, model_dir, table, out_dir, config, kg_dir=kg_dir, corpus=corpus, inputs=inputs,
                      progress=progress, device=device, recompute=recompute)


def _run_locked(model_dir, table, out: Path, config: EntityAuditConfig, *, progress, device, corpus, recompute):
    from kdel import __version__
    from kdel.audit import store
    from kdel.audit.entity_summary import summarize_entities
    from kdel.audit.evaluate import BaseScores
    from kdel.audit.execute import model_state_hash
    from kdel.audit.resume import fingerprint, read_unit, scan_units, settle, write_unit
    from kdel.io import atomic_write_json
    from kdel.models.loading import load_model_for_table
    from kdel.provenance import provenance

    edir = out / ENTITY_DIR
    t0 = time.perf_counter()
    model, tok = load_model_for_table(model_dir, table, device)
    pool = table.unrelated_sample(config.unrelated_size, config.seed)
    base = BaseScores.compute(model, tok, table, pool)
    entities = sample_entities(table, base.canonical_recalled().nonzero()[0], config.n_entities, config.n_bins,
                               config.seed)
    specs = plan_cases(config, table, entities)
    shared = {"case_format": CASE_FORMAT, "kdel_version": __version__, "model": store.model_identity(model_dir),
              "facts": f"{table.source}:{table.source_hash}", "corpus": store.corpus_identity(table, corpus),
              "probe": {"unrelated_size": config.unrelated_size, "unrelated_seed": config.seed}}
    fps = {s["id"]: fingerprint({**shared, "spec": {k: v for k, v in s.items() if k != "id"}}) for s in specs}
    scan = scan_units(edir / "cases", fps, CASE_FORMAT)
    settle(scan, edir / "superseded", recompute, "entity case file")
    prov = provenance(device)
    atomic_write_json(edir / "config.json", {"format": CONFIG_FORMAT, "config": config.to_json(), "inputs": shared,
                                             "provenance": prov, "model_dir": str(Path(model_dir).resolve()),
                                             "entities": entities, "case_ids": [s["id"] for s in specs]})
    todo = [s for s in specs if s["id"] in set(scan.todo)]
    fluency = _fluency_check(model_dir, model, tok, table)
    base_hash = model_state_hash(model)
    for k, spec in enumerate(todo):
        if progress:
            print(f"entity case {k + 1}/{len(todo)}: forget {spec['entity']} (degree {spec['entity_degree']:g}, "
                  f"{len(spec['fact_ids'])} facts) with {spec['method']}", file=sys.stderr, flush=True)
        rec = run_case(model, tok, table, base, spec, edir.parent / "cache", fluency)
        if model_state_hash(model) != base_hash:
            raise RuntimeError(f"entity case {spec['id']}: the weights differ from the base model after the revert")
        rec["revert_verified"] = True
        write_unit(edir / "cases", {"format": CASE_FORMAT, "id": spec["id"], "spec": spec, **rec,
                                    "fingerprint": fps[spec["id"]], "provenance": prov})
    cases = [read_unit(edir / "cases" / f"{s['id']}.json", CASE_FORMAT) for s in specs]
    summary = summarize_entities(cases, seed=config.seed)
    summary["timing"] = {"run_wall_s": time.perf_counter() - t0, "cases_run": len(todo)}
    summary["provenance"] = prov
    atomic_write_json(edir / "summary.json", summary)
    return summary


def _fluency_check(model_dir, model, tok, table):
    from kdel.forget.stage import is_real_model

    if not is_real_model(model_dir):
        return None
    from kdel.delete.corpus import corpus_of
    from kdel.models.fluency import FluencyCheck

    return FluencyCheck(model, tok, corpus_of(table).heldout_lines())


def run_case(model, tok, table, base, spec: dict, cache_dir, fluency=None) -> dict:
    """One entity case on the loaded model: forget, measure, revert. A failing method is a result."""
    from kdel.audit.cases import method_from_spec
    from kdel.forget.entity import Entity
    from kdel.forget.stage import ForgetSettings, forget_in_memory

    t0 = time.perf_counter()
    settings = ForgetSettings(method=spec["method"], objective=spec["objective"], layer=spec["layer"],
                              site=spec["site"], as_object=spec["as_object"], mode=spec["mode"], seed=spec["seed"],
                              candidates=spec["candidates"])
    entity = Entity(spec["entity"], None, spec["entity_degree"])
    try:
        edit, rec = forget_in_memory(model, tok, table, entity, method_from_spec(spec["method"], spec["hparams"]),
                                     settings, base=base, cache_dir=cache_dir, fluency=fluency)
    except Exception as e:  # noqa: BLE001
        return {"status": "error", "error": f"{type(e).__name__}: {' '.join(str(e).split())}",
                "timing": {"total_s": time.perf_counter() - t0}}
    edit.handle.revert()
    for k in ("entity", "method", "objective", "site", "seed", "hparams", "fact_ids", "unrelated_pool", "as_object"):
        rec.pop(k, None)
    rec["timing"]["total_s"] = time.perf_counter() - t0
    return {"status": "ok", "error": None, **rec}
