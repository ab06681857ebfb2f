"""`summarize(cases)`: the audit's summary.json (format kdel-summary/1) from kdel-case/1 dicts.

- cells: means with 95% bootstrap CIs of every metric per method × site × layer × popularity bin
  (+ "all" margins), separately for successful deletions, failed ones, and all;
- correlations: Spearman of each side effect with subject and object degree, and the partial Spearman
  controlling for ‖ΔW‖ and the probe group's size;
- regressions: Hase et al.'s fits of edit success on layer, tracing effect and both;
- timing: under its own key, the only part that differs between identical runs.
Cases are sorted by id first, so the summary does not depend on the order cases finished in.
"""

from __future__ import annotations

from collections import defaultdict

from kdel.audit.schema import SUMMARY_FORMAT
from kdel.audit.stats import bootstrap_ci, hase_regressions, partial_spearman, spearman

SIDE_GROUPS = ("same_subject", "same_object", "subject_as_object", "neighbors_1hop", "neighbors_2hop",
               "same_relation", "unrelated")
GROUP_METRICS = ("flip_rate", "any_broke", "mean_p_drop", "acc_after_recalled")
OUTCOMES = ("success", "failed", "all")


def _num(v):
    if v is None:
        return None
    return float(v)


def case_metrics(c: dict) -> dict[str, float | None]:
    """The flat metrics of one ok case (name -> number or None)."""
    m: dict[str, float | None] = {}
    for g in ("target", "paraphrase") + SIDE_GROUPS:
        gd = c["groups"].get(g)
        if gd is None:
            continue
        for k in GROUP_METRICS:
            m[f"{g}.{k}"] = _num(gd.get(k))
        m[f"{g}.size"] = _num(gd.get("n_recalled_before"))
    for k in ("acc_drop", "flip_rate_excluding_target", "mean_p_drop_excluding_target"):
        m[f"global.{k}"] = _num(c["global"].get(k))
    m["kl.mean"] = _num(c["kl"].get("mean"))
    for k in ("success", "target_recall_after", "target_prompts_success_rate", "paraphrase_recall_after",
              "paraphrase_success_rate", "target_rank_after"):
        m[f"efficacy.{k}"] = _num(c["efficacy"].get(k))
    for k in ("efficacy_score", "paraphrase_score", "neighborhood_score", "tracing_effect"):
        m[f"hase.{k}"] = _num(c["hase"].get(k))
    m["delta_norm"] = _num(c["delta_norm"])
    m["wrecked"] = _num(c["wrecked"])
    return m


def side_effect_metrics() -> list[tuple[str, str | None]]:
    """(side-effect metric, metric giving its group size or None) for the correlations."""
    out: list[tuple[str, str | None]] = []
    for g in SIDE_GROUPS:
        for k in ("flip_rate", "any_broke", "mean_p_drop"):
            out.append((f"{g}.{k}", f"{g}.size"))
    out += [("global.acc_drop", None), ("global.flip_rate_excluding_target", None),
            ("global.mean_p_drop_excluding_target", None), ("kl.mean", "unrelated.size")]
    return out


def _outcome_ok(c: dict, outcome: str) -> bool:
    return outcome == "all" or (c["success"] if outcome == "success" else not c["success"])


def _cells(ok: list[dict], metrics: list[dict], seed: int, n_boot: int) -> list[dict]:
    keyed: dict[tuple, list[int]] = defaultdict(list)
    for i, c in enumerate(ok):
        s = c["spec"]
        layer = s["layer"]
        sb, ob = c["fact"]["subject_bin"], c["fact"]["object_bin"]
        for outcome in OUTCOMES:
            if not _outcome_ok(c, outcome):
                continue
            base = (s["method"], s["site"])
            for lay in (layer, "all"):
                for b in (sb, "all"):
                    keyed[base + (lay, "subject", b, outcome)].append(i)
            keyed[base + ("all", "object", ob, outcome)].append(i)
    names = sorted({k for m in metrics for k in m})
    cells = []

    def order(key):
        return tuple((0, v) if isinstance(v, int) else (1, str(v)) for v in key)

    for key in sorted(keyed, key=order):
        idx = keyed[key]
        method, site, layer, bin_by, b, outcome = key
        cells.append({
            "method": method, "site": site, "layer": layer, "bin_by": bin_by, "bin": b, "outcome": outcome,
            "n": len(idx),
            "metrics": {k: bootstrap_ci([metrics[i].get(k) for i in idx], n_boot=n_boot, seed=seed) for k in names},
        })
    return cells


def _correlations(ok: list[dict], metrics: list[dict]) -> list[dict]:
    rows = []
    by_ms: dict[tuple, list[int]] = defaultdict(list)
    for i, c in enumerate(ok):
        by_ms[(c["spec"]["method"], c["spec"]["site"])].append(i)
    for (method, site), idx_all in sorted(by_ms.items()):
        for outcome in OUTCOMES:
            idx = [i for i in idx_all if _outcome_ok(ok[i], outcome)]
            if not idx:
                continue
            for vs, key in (("subject_degree", "subject_degree"), ("object_degree", "object_degree")):
                deg = [ok[i]["fact"][key] for i in idx]
                dn = [metrics[i].get("delta_norm") for i in idx]
                for name, size in side_effect_metrics():
                    y = [metrics[i].get(name) for i in idx]
                    if all(v is None for v in y):
                        continue
                    sp = spearman(deg, y)
                    covs = [dn] + ([[metrics[i].get(size) for i in idx]] if size else [])
                    ps = partial_spearman(deg, y, covs)
                    rows.append({
                        "method": method, "site": site, "outcome": outcome, "metric": name, "vs": vs,
                        "n": sp["n"], "rho": sp["rho"], "p": sp["p"],
                        "partial_rho": ps["rho"], "partial_p": ps["p"], "partial_df": ps["df"],
                        "controls": ["delta_norm"] + ([size] if size else []),
                    })
    return rows


def _regressions(ok: list[dict], metrics: list[dict]) -> list[dict]:
    rows = []
    by_ms: dict[tuple, list[int]] = defaultdict(list)
    for i, c in enumerate(ok):
        by_ms[(c["spec"]["method"], c["spec"]["site"], c["spec"]["objective"])].append(i)
    for (method, site, objective), idx in sorted(by_ms.items()):
        layers = [ok[i]["spec"]["layer"] for i in idx]
        te = [metrics[i].get("hase.tracing_effect") for i in idx]
        for y_name in ("hase.efficacy_score", "efficacy.success"):
            y = [metrics[i].get(y_name) for i in idx]
            rows.append({"method": method, "site": site, "objective": objective, "y": y_name,
                         **hase_regressions(y, layers, te)})
    return rows


def summarize(cases: list[dict], seed: int = 0, n_boot: int = 1000) -> dict:
    cases = sorted(cases, key=lambda c: c["case_id"])
    ok = [c for c in cases if c["status"] == "ok"]
    errors = [{"case_id": c["case_id"], "error": c.get("error")} for c in cases if c["status"] != "ok"]
    metrics = [case_metrics(c) for c in ok]
    timing_cases = [c.get("timing", {}) for c in cases]

    def tmean(k):
        v = [t[k] for t in timing_cases if isinstance(t.get(k), (int, float))]
        return sum(v) / len(v) if v else None

    return {
        "format": SUMMARY_FORMAT,
        "n_cases": len(cases),
        "n_ok": len(ok),
        "n_error": len(errors),
        "n_success": sum(1 for c in ok if c["success"]),
        "n_failed": sum(1 for c in ok if not c["success"]),
        "n_wrecked": sum(1 for c in ok if c["wrecked"]),
        "methods": sorted({c["spec"]["method"] for c in cases}),
        "sites": sorted({c["spec"]["site"] for c in cases}),
        "objectives": sorted({c["spec"]["objective"] for c in cases}),
        "case_ids": [c["case_id"] for c in cases],
        "cells": _cells(ok, metrics, seed, n_boot),
        "correlations": _correlations(ok, metrics),
        "regressions": _regressions(ok, metrics),
        "errors": errors,
        "timing": {
            "mean_case_s": tmean("total_s"),
            "mean_edit_s": tmean("edit_s"),
            "mean_eval_s": tmean("eval_s"),
            "total_case_s": sum(t.get("total_s", 0.0) or 0.0 for t in timing_cases),
        },
    }
