"""Training data for the risk predictor, from audit directories: one row per (case, probe fact).

Labels are the audit's own measurements, recorded per fact in each case file (`probes`: every other fact the
model recalled before the edit, with p(o) before and after and whether it is still recalled). Features are
recomputed from the audited model and facts (audit_config.json names them), with the case's spec (method,
resolved hyperparameters, site, layer, seed) and its recorded tracing effect, so they are the features
`kdel risk` computes for the same case before editing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdel.errors import UserError
from kdel.risk.features import FEATURES


@dataclass
class AuditSource:
    path: Path
    model_dir: str
    kg_dir: str | None
    facts: str | None
    corpus: str | None
    unrelated_pool: list[int]
    cases: list  # CaseRecord, status ok, with per-fact outcomes
    identity: str  # model hash + facts key: subjects of different audits of one model/KG are one cluster


def read_audit(audit_dir) -> AuditSource:
    """The audit's inputs and its usable cases; one-line errors for anything that cannot be learned from."""
    from kdel.audit.schema import CaseSchemaError
    from kdel.audit.store import read_case
    from kdel.audit.schema import CaseRecord

    d = Path(audit_dir)
    if not d.is_dir():
        raise UserError(f"audit directory {d} does not exist")
    try:
        cfg = json.loads((d / "audit_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        raise UserError(f"{d} is not an audit directory (no readable audit_config.json)") from None
    files = sorted((d / "cases").glob("*.json")) if (d / "cases").is_dir() else []
    if not files:
        raise UserError(f"audit directory {d} has no cases (nothing to learn from)")
    cases, missing = [], 0
    for p in files:
        try:
            rec = CaseRecord.from_json(read_case(p))
        except CaseSchemaError as e:
            raise UserError(f"{p}: not a valid case file ({e})") from None
        if rec.status != "ok":
            continue
        if rec.probes is None:
            missing += 1
            continue
        cases.append(rec)
    if missing and not cases:
        raise UserError(f"the cases of {d} have no per-fact outcomes (audited by a kdel that did not record them): "
                        f"audit again into a new directory")
    if not cases:
        raise UserError(f"audit directory {d} has no successful cases (every case failed)")
    ident = cfg.get("identity") or {}
    return AuditSource(path=d, model_dir=cfg.get("model_dir"), kg_dir=cfg.get("kg_dir"), facts=cfg.get("facts"),
                       corpus=cfg.get("corpus"), unrelated_pool=list(cfg.get("unrelated_pool") or []), cases=cases,
                       identity=f"{ident.get('model_hash', d)}:{ident.get('facts_key', '')}")


@dataclass
class Rows:
    """Feature rows and labels; `case` indexes into the per-case arrays."""

    X: np.ndarray = field(default_factory=lambda: np.zeros((0, len(FEATURES))))
    flipped: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    p_drop: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fact_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    case: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unrelated: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # probe in the case's unrelated group
    probe_group: np.ndarray = field(default_factory=lambda: np.zeros(0, object))  # the probe's group ("other": none)
    # per case
    case_x: list = field(default_factory=list)
    group: list = field(default_factory=list)  # cluster: audit identity + the deleted fact's subject
    success: list = field(default_factory=list)
    wrecked: list = field(default_factory=list)
    collateral: list = field(default_factory=list)  # mean p drop of the other facts recalled before
    n_flipped: list = field(default_factory=list)
    meta: list = field(default_factory=list)  # per case: audit, case id, fact, method, site, layer

    @property
    def n_cases(self) -> int:
        return len(self.case_x)

    def row_groups(self) -> np.ndarray:
        return np.asarray(self.group, dtype=object)[self.case]

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        out = Rows()
        if not parts:
            return out
        offset = 0
        arrays = {k: [] for k in ("X", "flipped", "p_drop", "fact_id", "case", "unrelated", "probe_group")}
        for r in parts:
            for k in arrays:
                v = getattr(r, k)
                arrays[k].append(v + offset if k == "case" else v)
            for k in ("case_x", "group", "success", "wrecked", "collateral", "n_flipped", "meta"):
                getattr(out, k).extend(getattr(r, k))
            offset += r.n_cases
        for k, v in arrays.items():
            setattr(out, k, np.concatenate(v))
        return out


def audit_rows(src: AuditSource, cache_dir=None, device: str = "cpu", progress: bool = False) -> Rows:
    """Rows of every usable case of one audit (the model is loaded once, the per-fact pass is shared)."""
    from kdel.facts import load_fact_table
    from kdel.models.loading import load_model_for_table
    from kdel.risk.context import Case, FeatureContext

    for what, p in (("model", src.model_dir), ("KG bundle", src.kg_dir), ("facts file", src.facts)):
        if p is not None and not Path(p).exists():
            raise UserError(f"{src.path}: the audited {what} {p} no longer exists")
    corpus = src.corpus if src.facts else None
    table = load_fact_table(kg=src.kg_dir, facts=src.facts, corpus=corpus)
    model, tok = load_model_for_table(src.model_dir, table, device)
    layers = sorted({c.spec.layer for c in src.cases})
    ctx = FeatureContext(model, tok, table, cache_dir=cache_dir, layers=layers)
    out = Rows()
    blocks = []
    it = src.cases
    if progress:
        import sys

        from tqdm import tqdm

        it = tqdm(src.cases, desc=f"features {src.path.name}", unit="case", file=sys.stderr)
    for c in it:
        fid = c.spec.fact_ids[0]
        groups = table.probe_groups(fid, src.unrelated_pool)
        case = Case(fact_id=fid, method=c.spec.method, site=c.spec.site, layer=c.spec.layer,
                    hparams=dict(c.spec.hparams), seed=c.spec.seed, tracing_effect=c.trace.tracing_effect)
        cf = ctx.case_features(case, groups)
        pos = {int(f): i for i, f in enumerate(cf.fact_ids)}
        ids = np.asarray(c.probes.fact_ids, dtype=np.int64)
        idx = np.array([pos[int(i)] for i in ids], dtype=np.int64)
        gof = {}
        for name, members in groups.items():
            for i in members:
                gof.setdefault(int(i), name)
        names = np.array([gof.get(int(i), "other") for i in ids], dtype=object)
        k = out.n_cases
        blocks.append((cf.X[idx], ~np.asarray(c.probes.recalled_after, bool),
                       np.asarray(c.probes.p_before) - np.asarray(c.probes.p_after), ids, np.full(len(ids), k),
                       names == "unrelated", names))
        out.case_x.append(cf.case_x)
        out.group.append(f"{src.identity}:{c.fact.subject}")
        out.success.append(bool(c.success))
        out.wrecked.append(bool(c.wrecked))
        g = c.global_
        out.collateral.append(float(g.mean_p_drop_excluding_target or 0.0))
        out.n_flipped.append(int(g.n_flipped_excluding_target))
        out.meta.append({"audit": str(src.path), "case_id": c.case_id, "fact_id": fid, "subject": c.fact.subject,
                         "method": c.spec.method, "site": c.spec.site, "layer": c.spec.layer})
    if blocks:
        out.X, out.flipped, out.p_drop, out.fact_id, out.case, out.unrelated, out.probe_group = (
            np.concatenate([b[i] for b in blocks]) for i in range(7))
    return out
