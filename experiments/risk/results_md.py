"""RESULTS.md of the risk validation, written from the experiment's record (every number from results.json)."""

from __future__ import annotations

import shutil
from pathlib import Path

NAMES = {"learned": "learned (gbdt, calibrated)", "first_order": "first-order κ (−margin after)",
         "subject_degree": "baseline: subject degree", "same_subject": "baseline: same-subject membership",
         "kappa": "baseline: |κ| alone"}
GOALS = {"flipped": 0.85, "top_decile": 0.80}


def _f(x, fmt=".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _ci(ci) -> str:
    return "n/a" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def auroc_table(block: dict, with_auprc: bool) -> list[str]:
    head = ("| predictor | AUROC | 95% CI | learned − this | CI of the difference | p (one-sided) | Holm p |"
            + (" AUPRC |" if with_auprc else ""))
    lines = [head, "|---|---|---|---|---|---|---|" + ("---|" if with_auprc else "")]
    for name in NAMES:
        r = block.get(name)
        if r is None:
            continue
        d = r.get("difference")
        diff = "—" if d is None else _f(d["estimate"])
        dci = "—" if d is None else _ci(d["ci"])
        p = "—" if d is None else _f(d.get("p_one_sided"), ".4f")
        ph = "—" if d is None else _f(d.get("p_holm"), ".4f")
        row = f"| {NAMES[name]} | {_f(r['auroc'])} | {_ci(r['ci'])} | {diff} | {dci} | {p} | {ph} |"
        if with_auprc:
            row += f" {_f(r.get('auprc'))} |"
        lines.append(row)
    return lines


def verdict(block: dict, goal: float) -> str:
    if "undefined" in block:
        return f"undefined ({block['undefined']})"
    learned = block["learned"]["auroc"]
    beats = [n for n in NAMES if n not in ("learned", "first_order") and n in block
             and block[n].get("difference", {}).get("ci") and block[n]["difference"]["ci"][0] > 0
             and (block[n]["difference"].get("p_holm") or 1.0) < 0.05]
    baselines = [n for n in NAMES if n not in ("learned", "first_order") and n in block]
    ok_goal = learned is not None and learned >= goal
    return (f"AUROC {_f(learned)} {'meets' if ok_goal else 'misses'} the goal ≥ {goal}; better than "
            f"{len(beats)} of {len(baselines)} baselines with a CI of the difference above 0 and Holm p < 0.05"
            + (f" ({', '.join(beats)})" if beats else ""))


def write_results(path: Path, rec: dict, figures: dict) -> None:
    t = rec["test"]
    s = rec["settings"]
    prov = rec["provenance"]
    L = ["# Risk predictor: validation across seeds", "",
         "Written by `experiments/risk/run.py` from `results.json`; do not edit by hand.", "",
         f"Command: `{rec['command']}`  ",
         f"Code: kdel {prov.get('kdel_version')}, commit {prov.get('git_commit')}"
         f"{' (dirty)' if prov.get('git_dirty') else ''}, code hash {str(prov.get('code_hash'))[:12]}; "
         f"Python {prov.get('python')}, torch {prov.get('torch')}, scikit-learn {prov.get('sklearn')}; "
         f"{prov.get('cpu')}, {prov.get('torch_threads')} torch thread(s).  ",
         f"Wall time: {rec['wall']['total_s'] / 60:.1f} min in all (KGs + models "
         f"{rec['wall']['kgs_and_models_s'] / 60:.1f}, audits {rec['wall']['audits_s'] / 60:.1f}, fit "
         f"{rec['wall']['fit_s'] / 60:.1f}, test features {rec['wall']['test_features_s'] / 60:.1f}, evaluation "
         f"{rec['wall']['evaluate_s'] / 60:.1f} min; stages already finished in the output directory are not rerun).", "",
         "## Setup", "",
         f"- Cells: {', '.join(x.upper() for x in s['topologies'])} × seeds {', '.join(map(str, s['seeds']))}: each a KG "
         f"({s['entities']} entities, {s['relations']} relations, generated with the seed), a `{s['preset']}` model "
         f"trained on it with the seed, and an audit: methods {', '.join(s['methods'])}, sites "
         f"{', '.join(s['sites'])}, every layer, {s['per_bin']} targets per subject-popularity bin (5 bins).",
         f"- Fitted on seed(s) {', '.join(map(str, s['train_seeds']))} (both graphs): {rec['model']['n_cases']} cases, "
         f"{rec['model']['n_rows']} probe rows ({rec['model']['n_flipped']} flipped), {rec['model']['n_groups']} "
         f"subjects. Tested on seeds {', '.join(map(str, rec['test_seeds']))} (new KG, new model): "
         f"{t['both']['n_cases']} cases, {t['both']['n_rows']} probe rows ({t['both']['n_flipped']} flipped), "
         f"{t['both']['n_subjects']} subjects.",
         f"- CIs: percentile, {t['both']['flipped']['_n_boot']} cluster-bootstrap replicates over the deleted "
         f"facts' subjects (paired: the difference learned − baseline is computed in each replicate). "
         f"p (one-sided): the share of replicates where the learned model is not better; Holm p: adjusted over "
         f"every learned-vs-baseline comparison of this file ({rec.get('n_comparisons', 'n/a')} tests).",
         f"- Grouped 5-fold CV on the training seed (folds by subject): flip AUROC {_f(rec['cv']['flip']['auroc'])}, "
         f"AUPRC {_f(rec['cv']['flip']['auprc'])}; p drop R² {_f(rec['cv']['p_drop']['r2'])}; success AUROC "
         f"{_f(rec['cv']['success']['auroc'])}.", ""]
    for key, title in (("both", "BA and ER together"), ("ba", "BA"), ("er", "ER")):
        r = t[key]
        L += [f"## Test seeds, {title}", "", f"**Probe fact flipped** ({r['n_flipped']} of {r['n_rows']} probe "
              f"rows): {verdict(r['flipped'], GOALS['flipped'])}.", ""]
        L += auroc_table(r["flipped"], True) + [""]
        for label, name in (("top_decile", "Case in the top decile of collateral"), ("wrecked", "Case wrecked")):
            blk = r[label]
            if "undefined" in blk:
                L += [f"**{name}**: AUROC undefined ({blk['undefined']}).", ""]
                continue
            goal = GOALS.get(label)
            v = verdict(blk, goal) if goal else f"AUROC {_f(blk['learned']['auroc'])}"
            L += [f"**{name}** ({blk['_positives']} of {r['n_cases']} cases): {v}.", ""]
            L += auroc_table(blk, False) + [""]
        L += [f"Efficacy head (P(success)) on the test cases: AUROC {_f(r['success']['auroc'])}, Brier "
              f"{_f(r['success']['brier'])}.", ""]
    rel = t["both"]["flipped_calibration"]
    L += ["## Calibration of P(flip) on the test seeds", "",
          f"Brier score {_f(rel['brier'], '.5f')} (base rate {_f(rel['base_rate'], '.5f')}).", "",
          "| predicted (bin) | mean predicted | observed | rows |", "|---|---|---|---|"]
    for b in rel["reliability"]:
        L.append(f"| {b['lo']:.1f}–{b['hi']:.1f} | {b['mean_predicted']:.4f} | {b['observed']:.4f} | {b['weight']:.0f} |")
    fig_dir = path.parent / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for name, src in figures.items():
        dst = fig_dir / Path(src).name
        if Path(src).resolve() != dst.resolve():  # --results-md inside --out: the figure is already there
            shutil.copyfile(src, dst)
        L += ["", f"![{name}](figures/{dst.name})"]
    L += ["", "## Stage times (s)", "",
          "This invocation's own stage times (a stage already finished in the output directory is not rerun: "
          "n/a), and the times the cells' artifacts recorded when they were made (training: train_report.json; "
          "audit: the wall time of the invocation that finished it, and the sum of its cases' times, which "
          "counts every case once whichever invocation ran it).", "",
          "| cell | KG (this run) | train (this run) | audit (this run) | train (recorded) | audit wall (recorded) | "
          "audit cases, summed (recorded) |", "|---|---|---|---|---|---|---|"]
    recorded = rec.get("recorded_timings") or {}
    for cell, tt in sorted(rec["stage_timings"].items()):
        r = recorded.get(cell, {})
        L.append(f"| {cell} | {_f(tt.get('kg_s'), '.0f')} | {_f(tt.get('train_s'), '.0f')} | {_f(tt.get('audit_s'), '.0f')} "
                 f"| {_f(r.get('train_s'), '.0f')} | {_f(r.get('audit_wall_s'), '.0f')} | {_f(r.get('audit_cases_s'), '.0f')} |")
    if recorded:
        tot = lambda k: sum(v.get(k, 0.0) for v in recorded.values())  # noqa: E731
        L += ["", f"Recorded totals: training {tot('train_s') / 60:.1f} min, audits {tot('audit_wall_s') / 60:.1f} min "
                  f"of wall time ({tot('audit_cases_s') / 60:.1f} min of case time, summed over the workers)."]
    path.write_text("\n".join(L) + "\n", encoding="utf-8")
