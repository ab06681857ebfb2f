"""Compare two `kdel pipeline` run directories graph by graph: the deletion targets the audit drew, the
training report's per-bin recall, case counts and headline means per method and site.

    python experiments/bench/compare_runs.py RUN_A RUN_B

docs/synth_kg.md uses it to show what the shared (degree, id) bin tie-break changed in the `quick` preset.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _load(run: Path, graph: str):
    cases = [json.loads(p.read_text()) for p in sorted((run / graph / "audit" / "cases").glob("*.json"))]
    summary = json.loads((run / graph / "audit" / "summary.json").read_text())
    train = json.loads((run / graph / "model" / "train_report.json").read_text())
    return cases, summary, train


def _mean(cases, get) -> str:
    xs = [get(c) for c in cases if c.get("status") == "ok"]
    xs = [float(x) for x in xs if x is not None]
    return f"{sum(xs) / len(xs):.3f}" if xs else "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    args = ap.parse_args()
    graphs = sorted(p.name for p in args.run_a.iterdir() if (p / "audit" / "summary.json").is_file())
    for g in graphs:
        (ca, sa, ra), (cb, sb, rb) = _load(args.run_a, g), _load(args.run_b, g)
        ta, tb = {c["fact"]["id"] for c in ca}, {c["fact"]["id"] for c in cb}
        print(f"## {g}")
        print(f"training steps {ra['steps']} / {rb['steps']}, recall {ra['recall']['recall']:.4f} / {rb['recall']['recall']:.4f}")
        for name, r in (("A", ra), ("B", rb)):
            bins = ", ".join(f"{k}: {v:.3f}" for k, v in r["recall"]["by_popularity_bin"].items())
            print(f"recall by subject bin ({name}): {bins}")
        print(f"deletion targets: {len(ta)} / {len(tb)}, {len(ta & tb)} in both")
        print("cases ok / successful / failed / wrecked: "
              + " -> ".join(f"{s['n_ok']} / {s['n_success']} / {s['n_failed']} / {s['n_wrecked']}" for s in (sa, sb)))
        print("| method @ site | success A | success B | same-subject mean p drop A | B | global acc drop A | B |")
        print("|---|---|---|---|---|---|---|")
        for m in sorted({c["spec"]["method"] for c in ca + cb}):
            for site in sorted({c["spec"]["site"] for c in ca + cb}):
                xa = [c for c in ca if (c["spec"]["method"], c["spec"]["site"]) == (m, site)]
                xb = [c for c in cb if (c["spec"]["method"], c["spec"]["site"]) == (m, site)]
                print(f"| {m} @ {site} | {_mean(xa, lambda c: c['success'])} | {_mean(xb, lambda c: c['success'])} "
                      f"| {_mean(xa, lambda c: c['groups']['same_subject']['mean_p_drop'])} "
                      f"| {_mean(xb, lambda c: c['groups']['same_subject']['mean_p_drop'])} "
                      f"| {_mean(xa, lambda c: c['global']['acc_drop'])} | {_mean(xb, lambda c: c['global']['acc_drop'])} |")
        print()


if __name__ == "__main__":
    main()
