"""AlphaEdit vs MEMIT on the same facts, from the curse-of-popularity secondary sweep (exploratory).

The secondary config's `memit-*` conditions edit each target fact with both MEMIT and AlphaEdit (objective
replace, last token, the traced layer), so every target gives a paired difference AlphaEdit − MEMIT per
side-effect metric. Unit: the target fact; clusters: its subject in its cell (graph × seed), resampled by the
cluster bootstrap; a two-sided bootstrap p per metric, Holm over the metrics. Reported for all paired targets
(whatever each edit's success) and for the targets both methods edited successfully.

    PYTHONPATH=. python experiments/curse_of_popularity/alphaedit_vs_memit.py --sweep runs/curse_secondary [--out F.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

GROUPS = ("unrelated", "same_subject", "same_object", "same_relation", "neighbors_1hop")
CASE_METRICS = ("global_acc_drop", "kl_mean")
PAIR = ("alphaedit", "memit")


def read_pairs(cases_csv: Path) -> list[dict]:
    """One record per (cell, target) edited by both methods: per method its success and metrics."""
    by: dict = defaultdict(dict)
    with open(cases_csv, newline="") as f:
        for r in csv.DictReader(f):
            if r["method"] not in PAIR or r["status"] != "ok":
                continue
            key = (r["condition"], r["seed"], r["fact_id"])
            m = by[key].setdefault(r["method"], {"success": r["success"] == "1", "subject": r["subject"],
                                                   "topology": r["topology"]})
            for c in CASE_METRICS:
                m[c] = float(r[c]) if r[c] != "" else np.nan
            if r["group"] in GROUPS:
                m[r["group"]] = float(r["mean_p_drop"]) if r["mean_p_drop"] != "" else np.nan
    out = []
    for (cond, seed, fid), ms in sorted(by.items()):
        if all(m in ms for m in PAIR):
            out.append({"cell": f"{cond}/{seed}", "fact_id": int(fid), "topology": ms["memit"]["topology"],
                        "subject": ms["memit"]["subject"], **{m: ms[m] for m in PAIR}})
    return out


def compare(pairs: list[dict], n_boot: int, seed: int) -> list[dict]:
    from kdel.stats.bootstrap import cluster_weights, percentile_ci, weighted_mean
    from kdel.stats.multiple import holm

    rows = []
    for metric in (*CASE_METRICS, *GROUPS):
        d = np.array([p["alphaedit"].get(metric, np.nan) - p["memit"].get(metric, np.nan) for p in pairs])
        keep = np.isfinite(d)
        d, sub = d[keep], [p for p, k in zip(pairs, keep) if k]
        if len(d) < 5:
            rows.append({"metric": metric, "n": int(len(d)), "estimate": None})
            continue
        W = cluster_weights([f"{p['cell']}/{p['subject']}" for p in sub], n_boot, seed)
        reps = weighted_mean(W, d)
        lo, hi = percentile_ci(reps)
        p_two = float(min(1.0, 2 * min((reps <= 0).mean(), (reps >= 0).mean())))
        floor = p_two < 1.0 / n_boot  # no replicate crosses 0: p is below the bootstrap's resolution 1/n_boot
        p_two = max(p_two, 1.0 / n_boot)
        cells = sorted({p["cell"] for p in sub})
        per_cell = [float(np.mean([x for x, p in zip(d, sub) if p["cell"] == c])) for c in cells]
        rows.append({"metric": metric, "n": int(len(d)), "n_clusters": len({f"{p['cell']}/{p['subject']}" for p in sub}),
                     "estimate": float(d.mean()), "lo": lo, "hi": hi, "p": p_two, "p_below_resolution": floor,
                     "alphaedit_larger": int((d > 0).sum()), "cells_positive": sum(x > 0 for x in per_cell),
                     "cells": len(cells)})
    tested = [r for r in rows if r["estimate"] is not None]
    for r, h in zip(tested, holm([r["p"] for r in tested])):
        r["holm_p"] = h
    return rows


def _p(x: float, bound: str = "") -> str:
    """`bound`: "<" or "≤" when x is the bootstrap's resolution (or a Holm value computed from one)."""
    return bound + (f" {x:.3f}" if x >= 0.001 else f" {x:.0e}") if bound else (f"{x:.3f}" if x >= 0.001 else f"{x:.1e}")


def markdown(title: str, rows: list[dict]) -> str:
    f = lambda x: "–" if x is None else f"{x:+.4f}"  # noqa: E731
    lines = [title, "", "| metric (AlphaEdit − MEMIT) | targets | mean difference [95% CI] | p | Holm p | "
             "AlphaEdit larger | cells with a positive mean |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["estimate"] is None:
            lines.append(f"| {r['metric']} | {r['n']} | – | – | – | – | – |")
            continue
        lines.append(f"| {r['metric']} | {r['n']} | {f(r['estimate'])} [{f(r['lo'])}, {f(r['hi'])}] | "
                     f"{_p(r['p'], '<' if r['p_below_resolution'] else '')} | "
                     f"{_p(r['holm_p'], '≤' if r['p_below_resolution'] else '')} | {r['alphaedit_larger']} of {r['n']} | "
                     f"{r['cells_positive']} of {r['cells']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", type=Path, required=True, help="the secondary sweep's --out directory")
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    ap.add_argument("--n-boot", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    cases = a.sweep / "cases.csv"
    if not cases.is_file():
        print(f"alphaedit_vs_memit.py: error: {cases} does not exist (run the secondary sweep first)", file=sys.stderr)
        return 2
    pairs = read_pairs(cases)
    both = [p for p in pairs if p["alphaedit"]["success"] and p["memit"]["success"]]
    res = {"all": compare(pairs, a.n_boot, a.seed), "both_successful": compare(both, a.n_boot, a.seed),
           "n_pairs": len(pairs), "n_both_successful": len(both),
           "success": {m: int(sum(p[m]["success"] for p in pairs)) for m in PAIR}}
    from kdel.provenance import provenance

    res["command"] = "PYTHONPATH=. python experiments/curse_of_popularity/alphaedit_vs_memit.py " + " ".join(
        argv or sys.argv[1:])
    res["provenance"] = provenance("cpu")
    print(f"{len(pairs)} targets edited by both (successful: AlphaEdit {res['success']['alphaedit']}, "
          f"MEMIT {res['success']['memit']}, both {len(both)})\n")
    print(markdown("All paired targets:", res["all"]) + "\n")
    print(markdown("Targets both methods edited successfully:", res["both_successful"]))
    if a.out:
        a.out.write_text(json.dumps(res, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
