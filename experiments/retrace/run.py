"""Do published results still stand on the current tracer? Retrace every audit of finished experiments.

The curse-of-popularity, localization-vs-editing and risk results were made by earlier commits; the tracer has
changed since (issue 18: batching that moves traced values in their last bits). Their audits used the tracer
for the layer choice (`layers auto`) and for Hase's tracing effect. For every audit under the given experiment
directories this traces the targets again with the installed kdel (kdel.audit.retrace) and reports whether
every case is planned again (same layer and site) and how far the effects moved. Nothing in the experiment
directories is written.

    python experiments/retrace/run.py --runs /work/runs/curse_primary /work/runs/localization --out retrace.json \
        --results-md experiments/retrace/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def audit_dirs(run: Path) -> list[Path]:
    """The finished audits (plan.json + audit_config.json) in `run`: itself, or run/audits/*."""
    if (run / "plan.json").is_file() and (run / "audit_config.json").is_file():
        return [run]
    return sorted(p.parent for p in run.glob("audits/*/plan.json") if (p.parent / "audit_config.json").is_file())


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.1e}"


def results_md(rows: list[dict], command: str, prov: dict, seconds: float) -> str:
    out = ["# Published results retraced with the current tracer", "",
           "Written by `experiments/retrace/run.py`; do not edit by hand.", "",
           f"Command: `{command}`  ",
           f"Code: kdel {prov.get('kdel_version')}, commit {prov.get('git_commit')} (uncommitted changes: "
           f"{'yes' if prov.get('git_dirty') else 'no'}); torch {prov.get('torch')}, transformers "
           f"{prov.get('transformers')}; {prov.get('cpu')}, {prov.get('torch_threads')} torch thread(s).  ",
           f"Wall time: {seconds / 60:.1f} min.", "",
           "Each audit's targets are traced again on its model; a case is *planned again* when the current code "
           "lists it with the same method, fact, site and layer; a *choice* is unchanged when every site's chosen "
           "layer, site, exclusions and fallback are. Effects: the largest |difference| of Hase's tracing effect "
           "(per case) and of the layer choice's effect and runner-up (recorded rounded to 1e-6).", "",
           "| experiment | audits | recorded by | targets | cases | planned again | choices unchanged | "
           "max Δ tracing effect | max Δ choice effect | models unchanged |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    by_run: dict[str, list[dict]] = {}
    for r in rows:
        by_run.setdefault(r["experiment"], []).append(r)
    for name, rs in by_run.items():
        te = [r["max_tracing_effect_diff"] for r in rs if r["max_tracing_effect_diff"] is not None]
        ce = [r["max_choice_effect_diff"] for r in rs if r["max_choice_effect_diff"] is not None]
        commits = sorted({(r["recorded_commit"] or "?")[:7] for r in rs})
        out.append(f"| {name} | {len(rs)} | {', '.join(commits)} | {sum(r['targets'] for r in rs)} | "
                   f"{sum(r['cases'] for r in rs)} | {sum(r['same_cases'] for r in rs)} | "
                   f"{sum(r['same_choices'] for r in rs)} | {_fmt(max(te) if te else None)} | "
                   f"{_fmt(max(ce) if ce else None)} | {sum(r['model_identical'] for r in rs)} of {len(rs)} |")
    diffs = [f"- {r['audit_dir']}: {line}" for r in rows for line in r["differences"]]
    out += ["", "## Differences", ""] + (diffs or ["None: every case and every choice is reproduced."])
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="experiment output directories or audits")
    ap.add_argument("--out", type=Path, required=True, help="JSON of every audit's report")
    ap.add_argument("--results-md", type=Path, help="also write this markdown summary")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    from kdel.audit.retrace import retrace_audit
    from kdel.errors import UserError
    from kdel.provenance import provenance

    torch.set_num_threads(args.threads)
    start = time.time()
    rows = []
    for run in args.runs:
        dirs = audit_dirs(run)
        if not dirs:
            sys.exit(f"error: {run} holds no finished audit (plan.json + audit_config.json)")
        for i, d in enumerate(dirs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # fallback warnings: the same ones the audit printed
                try:
                    r = retrace_audit(d)
                except UserError as e:
                    sys.exit(f"error: {e}")
            row = {"experiment": run.name, **r.to_json()}
            rows.append(row)
            print(f"[{run.name} {i + 1}/{len(dirs)}] {d.name}: {r.same_cases}/{r.cases} cases, "
                  f"{r.same_choices}/{r.targets} choices, max Δ effect {_fmt(r.max_tracing_effect_diff)} / "
                  f"{_fmt(r.max_choice_effect_diff)}", flush=True)
    seconds = time.time() - start
    prov = provenance("cpu")
    args.out.write_text(json.dumps({"provenance": prov, "seconds": seconds, "audits": rows}, indent=1))
    if args.results_md:
        command = "python experiments/retrace/run.py " + " ".join(sys.argv[1:])
        args.results_md.write_text(results_md(rows, command, prov, seconds), encoding="utf-8")
    print(f"{len(rows)} audits, {sum(not r['reproduced'] for r in rows)} not reproduced, {seconds:.0f} s")


if __name__ == "__main__":
    main()
