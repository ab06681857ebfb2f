"""Recompute a finished audit's traces with the installed code and compare them with what its cases used.

An audit's cases depend on the tracer twice: `layers auto` / `sites auto` choose each target's layer and site
from a windowed trace, and every case records Hase et al.'s tracing effect at its layer. When the tracer
changes (faster batching moves values in their last bits), a published result made by an older kdel stays
valid exactly when the current code makes the same choices and (nearly) the same effects for its targets.
This module checks that, without editing anything: it reads OUT/plan.json (the targets and the cases as
planned), traces the targets again on the audited model (also when the audit reused a `kdel trace` run) and
lists the cases anew, then compares them case by case. Nothing in the audit directory is written.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kdel.errors import UserError


@dataclass
class RetraceReport:
    audit_dir: str
    recorded_commit: str | None  # the kdel commit that planned the audit (its provenance)
    model_identical: bool  # the model directory still hashes to the audited model
    targets: int
    cases: int  # cases in the recorded plan
    same_cases: int  # recorded cases the current code plans too (same method, fact, site, layer, settings; an
    # effect measured by both or neither)
    same_choices: int  # targets whose layer choice (site and layer at every site) is unchanged
    max_tracing_effect_diff: float | None  # over cases planned by both; None when the audit has none
    max_choice_effect_diff: float | None  # the choice's exact effect and runner-up effect, over unchanged choices
    differences: list[str] = field(default_factory=list)  # one line each, the first few

    @property
    def reproduced(self) -> bool:
        return self.model_identical and self.same_cases == self.cases and self.same_choices == self.targets

    def to_json(self) -> dict:
        return {**asdict(self), "reproduced": self.reproduced}


def _read(path: Path, what: str) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        raise UserError(f"{path.parent} is not a finished audit (no readable {what})") from None
    if not isinstance(d, dict):
        raise UserError(f"{path}: not a JSON object")
    return d


def _diff(a, b) -> float | None:
    """|a - b|; 0 when both are missing; None when only one is (reported as a difference, not a number)."""
    if a is None and b is None:
        return 0.0
    if a is None or b is None:
        return None
    return abs(float(a) - float(b))


def _choice_key(choice: dict | None) -> tuple | None:
    if not choice:
        return None
    return (choice.get("chosen_site"), choice.get("chosen_layer"), choice.get("site"), choice.get("layer"),
            choice.get("fallback"), tuple(sorted((choice.get("excluded") or {}).items())))


def retrace_audit(audit_dir, device: str = "cpu", max_listed: int = 10) -> RetraceReport:
    """Trace the audit's targets again with the installed kdel and compare with its plan (see module doc)."""
    from kdel.audit.cases import AuditConfig, CaseSpec, build_cases, trace_targets
    from kdel.audit.store import model_identity
    from kdel.facts import load_fact_table
    from kdel.models.adapter import ModelAdapter
    from kdel.models.loading import load_model_for_table

    d = Path(audit_dir)
    if not d.is_dir():
        raise UserError(f"audit directory {d} does not exist")
    cfg = _read(d / "audit_config.json", "audit_config.json")
    plan = _read(d / "plan.json", "plan.json")
    try:
        config = AuditConfig.from_json(cfg["config"])
        recorded = [CaseSpec.from_json(c) for c in plan["cases"]]
        targets = [int(t) for t in plan["targets"]]
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{d}: audit_config.json or plan.json is not in a format this kdel reads ({e})") from None
    model_dir, kg_dir, facts = cfg.get("model_dir"), cfg.get("kg_dir"), cfg.get("facts")
    if not model_dir or not Path(model_dir).is_dir():
        raise UserError(f"{d}: the audited model directory {model_dir} is gone: nothing to trace")
    table = load_fact_table(kg=kg_dir, facts=None if kg_dir else facts)
    ident = (cfg.get("identity") or {}).get("model_hash")
    same_model = ident is None or model_identity(model_dir) == ident
    model, tok = load_model_for_table(model_dir, table, device)
    n_layers = ModelAdapter(model, tok).n_layers
    # an audit that reused a `kdel trace` run (--traces) is traced anew: the question is what today's tracer says
    fresh = dataclasses.replace(config, traces_dir=None)
    traces = trace_targets(model, tok, table, targets, fresh, n_layers, need_peaks=config.needs_choice)
    now = {s.case_id: s for s in build_cases(table, targets, traces, config, n_layers)}

    notes: list[str] = []
    if not same_model:
        notes.append(f"the model in {model_dir} is not the audited one (its hash changed)")
    same_cases, te_diff, choice_diff = 0, [], []
    for spec in recorded:
        new = now.get(spec.case_id)
        if new is None:
            notes.append(f"case {spec.case_id} (fact {spec.fact_ids[0]}, {spec.method}, {spec.site}, layer "
                         f"{spec.layer}) is not planned by the current code")
            continue
        diff = _diff(spec.tracing_effect, new.tracing_effect)
        if diff is None:  # measured by one of the two only: not the same case
            notes.append(f"case {spec.case_id}: tracing effect {spec.tracing_effect} -> {new.tracing_effect}")
            continue
        same_cases += 1
        te_diff.append(diff)
    same_choices = 0
    first: dict[int, dict[str, CaseSpec]] = {}  # fact -> site -> its first recorded case (they share its traces)
    for spec in recorded:
        first.setdefault(spec.fact_ids[0], {}).setdefault(spec.site, spec)
    for fid in targets:
        info = traces[fid]
        by_site = first.get(fid, {})
        ok = all(spec.peak_layers == info.peak_layers for spec in by_site.values())
        if not ok:
            notes.append(f"fact {fid}: peak layers {next(iter(by_site.values())).peak_layers} -> {info.peak_layers}")
        for site, spec in by_site.items():
            new_choice = dict(info.picks[site]) if info.picks else None
            if _choice_key(spec.layer_choice) != _choice_key(new_choice):
                ok = False
                notes.append(f"fact {fid} at {site}: choice {_choice_key(spec.layer_choice)} -> "
                             f"{_choice_key(new_choice)}")
            elif new_choice:
                for k in ("effect", "runner_up_effect"):
                    diff = _diff(spec.layer_choice.get(k), new_choice.get(k))
                    if diff is None:
                        ok = False
                        notes.append(f"fact {fid} at {site}: {k} {spec.layer_choice.get(k)} -> {new_choice.get(k)}")
                    else:
                        choice_diff.append(diff)
        same_choices += ok
    return RetraceReport(
        audit_dir=str(d), recorded_commit=(cfg.get("provenance") or {}).get("git_commit"), model_identical=same_model,
        targets=len(targets), cases=len(recorded), same_cases=same_cases, same_choices=same_choices,
        max_tracing_effect_diff=max(te_diff) if te_diff and config.tracing_effect else None,
        max_choice_effect_diff=max(choice_diff) if choice_diff else None,
        differences=notes[:max_listed])
