"""RESULTS.md, written by code from results.json: every number in it comes from the run.

The first screen answers the primary hypothesis (verdict, pooled estimate, CI, p, the plot); exploratory
tables follow in collapsible sections; the last section records the code version, libraries, hardware,
threads and wall time. `copy_results_md` puts a copy (with its figures) in an experiment folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kdel.errors import UserError
from kdel.io import atomic_write_text

MARKER = "<!-- kdel-sweep-results: written by `kdel sweep` from results.json; rerun the command to update -->"


def is_results_md(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().strip() == MARKER
    except (OSError, UnicodeDecodeError):
        return False


def f(v, d: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{d}f}"


def p(v) -> str:
    return "–" if v is None else ("< 0.001" if v < 0.001 else f"{v:.3f}")


def ci(lo, hi, d: int = 2) -> str:
    return "" if lo is None or hi is None else f" [{f(lo, d)}, {f(hi, d)}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _details(summary: str, body: list[str]) -> list[str]:
    return ["<details>", f"<summary>{summary}</summary>", ""] + body + ["", "</details>", ""]


def _image(figs, name: str, alt: str) -> list[str]:
    return [f"![{alt}](figures/{name})", ""] if f"figures/{name}" in figs else []


def primary_section(r: dict | None, figs=()) -> list[str]:
    if r is None:  # the figure then shows the first graph contrast
        return ["## Primary hypothesis", "", "This config declares no primary hypothesis: every row below is "
                "exploratory.", "", *_image(figs, "side_effect_vs_degree.png",
                                             "side effect vs degree, the first graph contrast")]
    lines = ["## Primary hypothesis", ""]
    if r.get("statement"):
        lines += [f"*{r['statement']}*", ""]
    lines += [f"**Verdict:** {r['verdict']}", "", f"Test: `{r['hypothesis']}`, {r['a']} vs {r['b']}; decided by the "
              f"pooled one-sided test of Δz at alpha {f(r['alpha'], 3)} (one pre-declared test, not corrected).", ""]
    lines += _image(figs, "primary_per_seed.png", "primary hypothesis per seed and pooled")
    rows = []
    for s in r["per_seed"]:
        a, b, d = s.get("a") or {}, s.get("b") or {}, s.get("difference") or {}
        m = (s.get("matched") or {}).get("a") or {}
        rows.append([str(s["seed"]), f(a.get("estimate")) + ci(a.get("lo"), a.get("hi")),
                     f(b.get("estimate")) + ci(b.get("lo"), b.get("hi")),
                     f(d.get("estimate")) + ci(d.get("lo"), d.get("hi")), p(d.get("p")),
                     f"{a.get('n_facts', 0)}/{a.get('n_subjects', 0)} · {b.get('n_facts', 0)}/{b.get('n_subjects', 0)}",
                     f(m.get("estimate")) + ci(m.get("lo"), m.get("hi"))])
    pa, pb, pd = r["pooled"]["a"] or {}, r["pooled"]["b"] or {}, r["pooled"]["difference"]
    pm, pmd = r["pooled"]["matched_a"] or {}, r["pooled"]["matched_difference"]
    rows.append([f"**pooled ({pd.get('k', 0)} seeds)**", f(pa.get("estimate")) + ci(pa.get("lo"), pa.get("hi")),
                 f(pb.get("estimate")) + ci(pb.get("lo"), pb.get("hi")),
                 f"Δz {f(pd.get('d'))}" + ci(pd.get("d_lo"), pd.get("d_hi")), p(pd.get("p")),
                 f"I² = {f(pd.get('i2'))}", f(pm.get("estimate")) + ci(pm.get("lo"), pm.get("hi"))])
    lines += _table(["seed", f"ρ {r['a']}", f"ρ {r['b']}", "Δρ (pooled: Δz)", "p", "facts/subjects (a · b)",
                     f"ρ {r['a']} in {r['b']}'s degree range"], rows)
    lines += ["", f"Degree-range-matched contrast pooled over {pmd.get('k', 0)} seeds: Δz = {f(pmd.get('d'))}"
              f"{ci(pmd.get('d_lo'), pmd.get('d_hi'))}, p = {p(pmd.get('p'))}.", ""]
    lines += _image(figs, "side_effect_vs_degree.png", "side effect vs degree")
    return lines


def comparisons_section(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    n = sum(1 for r in rows if r["pooled"]["difference"].get("p") is not None)
    body = _table(["condition vs reference", "method @ site", "metric ~ predictor", "pooled Δz [CI]", "p", "Holm p",
                   "BH q", "seeds", "I²"],
                  [[f"{r['a']} vs {r['b']}", f"{r['method']} @ {r['site']}", f"{r['metric']} ~ {r['vs']}",
                    f(r["pooled"]["difference"].get("d")) + ci(r["pooled"]["difference"].get("d_lo"),
                                                               r["pooled"]["difference"].get("d_hi")),
                    p(r["pooled"]["difference"].get("p")), p(r.get("p_holm")), p(r.get("q_bh")),
                    str(r["pooled"]["difference"].get("k", 0)), f(r["pooled"]["difference"].get("i2"))] for r in rows])
    return ["## Graph comparisons (exploratory)", ""] + _details(
        f"{len(rows)} contrasts (two-sided; Holm and BH over the {n} with a p)", body)


def popularity_section(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    n = sum(1 for r in rows if r["pooled"].get("p") is not None)
    body = _table(["condition", "method @ site", "layer", "outcome", "metric ~ predictor", "pooled ρ [CI]", "p",
                   "Holm p", "BH q", "per-seed ρ", "facts / subjects (all seeds)", "I²"],
                  [[r["condition"], f"{r['method']} @ {r['site']}", str(r["layer"]), r["outcome"],
                    f"{r['metric']} ~ {r['vs']}", f(r["pooled"].get("estimate")) + ci(r["pooled"].get("lo"),
                                                                                      r["pooled"].get("hi")),
                    p(r["pooled"].get("p")), p(r.get("p_holm")), p(r.get("q_bh")),
                    ", ".join(f(s.get("rho")) for s in r["per_seed"]),
                    f"{r['pooled'].get('n_facts', 0)} / {r['pooled'].get('n_subjects', 0)}", f(r["pooled"].get("i2"))]
                   for r in rows])
    return ["## Popularity correlations (exploratory)", ""] + _details(
        f"{len(rows)} rows; Holm and BH over the {n} pooled tests", body)


def hase_section(rows: list[dict], paper: dict, figs=()) -> list[str]:
    n_tests = sum(1 for r in rows if r["pooled"].get("p") is not None)  # the family Holm and BH adjusted over
    rows = [r for r in rows if any(s.get("n_layers", 0) > 1 for s in r["per_seed"])]
    if not rows:
        return []

    def m(r, k):
        x = r["pooled"][k]
        return f(x.get("mean")) + ci(x.get("lo"), x.get("hi"))

    def p_cell(r):
        return (f"{f(r['pooled'].get('p'), 3)} / {f(r.get('p_holm'), 3)} / {f(r.get('q_bh'), 3)}"
                if r["pooled"].get("p") is not None else "–")

    body = _table(["condition", "method @ site", "objective", "y", "R² layer", "R² tracing", "R² layer × tracing",
                   "ΔR² (tracing over layer)", "seeds with p < 0.05 (cluster-robust)", "combined p / Holm / BH q",
                   "per-seed R² layer / tracing"],
                  [[r["condition"], f"{r['method']} @ {r['site']}", r["objective"], r["y"], m(r, "r2_layer"),
                    m(r, "r2_tracing"), m(r, "r2_layer_x_tracing"), m(r, "delta_r2_tracing_over_layer"),
                    f"{r['pooled'].get('cluster_test_significant_seeds', 0)} of "
                    f"{r['pooled'].get('cluster_test_seeds', 0)}", p_cell(r),
                    ", ".join(f"{f(s.get('r2_layer'))}/{f(s.get('r2_tracing'))}" for s in r["per_seed"])]
                   for r in rows])
    ref = (f"For comparison, {paper['source']} ({paper['model']}, {paper['method']}, {paper['problem']}): R² "
           f"{f(paper['r2_layer'], 3)} from layer alone, {f(paper['r2_layer_and_tracing'], 3)} with tracing added.")
    return ["## Hase et al.'s regressions: does localization inform editing?", "", ref, "",
            "Mean over seeds with a t interval (k − 1 df); per seed, cluster-bootstrap CIs are in results.json. "
            "Does tracing add to layer? Per seed, a Wald test of the tracing and layer × tracing coefficients with a "
            "cluster-robust (CR1, subjects) covariance against F(q, G − 1), since a fact's edits at several layers "
            "are not independent; the seeds' p are combined by Fisher's method, then adjusted by Holm and BH over "
            f"the {n_tests} rows. Hase et al.'s plain F-test (every edit independent) is in results.json "
            "(`f_test`).", ""] \
        + body + [""] + _image(figs, "hase_r2.png", "Hase et al. R² per seed and pooled")


def cells_section(cells: list[dict]) -> list[str]:
    rows = []
    for c in cells:
        t = c.get("train") or {}
        rows.append([c["condition"], str(c["seed"]), f(c["finished"]), str(c.get("n_cases", "–")),
                     str(c.get("n_success", "–")), str(c.get("n_wrecked", "–")), str(c.get("n_error", "–")),
                     f"{c.get('n_facts', '–')} / {c.get('n_subjects', '–')}",
                     f"{t.get('steps', '–')} / {f(t.get('recall'), 3)}"])
    return ["## Cells", ""] + _details(f"{len(cells)} cells (condition × seed)", _table(
        ["condition", "seed", "finished", "cases", "successful", "wrecked", "errors", "facts / subjects",
         "train steps / recall"], rows))


def environment_section(res: dict) -> list[str]:
    from kdel.sweep.environment import libraries

    prov = res.get("provenance") or {}
    run = res.get("run") or {}
    stage_s = run.get("stage_seconds") or {}
    stage_cpu = run.get("stage_cpu_seconds") or {}
    lines = ["## Reproducibility", "",
             f"- Code: kdel {prov.get('kdel_version')}, git commit {prov.get('git_commit')} (uncommitted changes: "
             f"{f(prov.get('git_dirty'))}), source hash {str(prov.get('code_hash'))[:12]}.",
             "- Libraries: " + ", ".join(f"{k} {v}" for k, v in libraries(prov).items()) + ".",
             f"- Hardware: {prov.get('cpu')} ({prov.get('cpu_count')} CPUs); GPU: {prov.get('gpu') or 'none'}; "
             f"{prov.get('platform')}.",
             f"- Run: {run.get('workers')} worker(s), backend {run.get('backend')}, device {run.get('device')}, "
             f"{run.get('threads_per_job')} torch thread(s) per job.",
             f"- Wall time: {f(run.get('wall_s_all_invocations'), 1)} s over {run.get('invocations')} invocation(s) "
             f"(this one: {f(run.get('wall_s_this_invocation'), 1)} s, before aggregation). Stage jobs recorded "
             + ", ".join(f"{k} {f(v, 1)} s" for k, v in stage_s.items()) + " of wall time and "
             + ", ".join(f"{k} {f(v, 1)} s" for k, v in stage_cpu.items()) + " of CPU time.",
             f"- Cells finished: {res['n_cells_finished']} of {res['n_cells']}.",
             ]
    versions = run.get("stage_code_versions") or {}
    if len(versions) > 1:
        lines.append("- **Stages come from several code versions:** " +
                     ", ".join(f"{k} ({v} jobs)" for k, v in sorted(versions.items())) + ".")
    if res.get("failures"):
        lines.append(f"- **{len(res['failures'])} jobs failed**; the numbers above cover the finished cells only: "
                     + "; ".join(f"{k}: {v}" for k, v in list(res["failures"].items())[:5]))
    return lines + [""]


def render(res: dict) -> str:
    figs = tuple(res.get("figures") or ())
    lines = [MARKER, "", f"# {res['name']}", ""]
    if res.get("description"):
        lines += [res["description"].strip(), ""]
    run = res.get("run") or {}
    if run.get("command"):
        lines += [f"Produced by `{run['command']}` ({res['n_cells_finished']} of {res['n_cells']} cells; "
                  f"{f((run.get('wall_s_all_invocations') or 0) / 60, 1)} min of wall time in "
                  f"{run.get('invocations')} invocation(s)). Every number below is written by that command.", ""]
    hase = hase_section(res.get("hase") or [], res.get("hase_paper") or {}, figs)
    lines += primary_section(res.get("primary"), figs)
    if res.get("primary") is None:  # without a primary hypothesis, the regressions are the answer: first
        lines += hase
    lines += comparisons_section(res.get("comparisons") or [])
    lines += popularity_section(res.get("popularity") or [])
    if res.get("primary") is not None:
        lines += hase
    lines += cells_section(res.get("cells") or [])
    lines += environment_section(res)
    return "\n".join(lines).rstrip() + "\n"


def write_results_md(path: Path, res: dict) -> Path:
    atomic_write_text(path, render(res))
    return path


def check_destination(dest: Path, inputs) -> Path:
    """The output rule for --results-md: a new file or one this command wrote; its figures/ folder beside it
    may hold files only when the RESULTS.md there is ours (they are then ours too)."""
    from kdel.outputs import check_out_file

    dest = check_out_file(dest, inputs=inputs, recognise=is_results_md, what="--results-md")
    figs = dest.parent / "figures"
    if figs.exists() and not figs.is_dir():
        raise UserError(f"cannot copy the figures beside {dest}: {figs} is a file")
    if figs.is_dir() and any(figs.iterdir()) and not is_results_md(dest):
        raise UserError(f"refusing to write figures into {figs}: it holds files and {dest} is not a RESULTS.md "
                        "that kdel sweep wrote; choose another --results-md")
    return dest


def copy_results_md(out: Path, dest: Path) -> Path:
    """Copy DIR/RESULTS.md to `dest` and DIR/figures/*.png to dest's folder/figures/ (links stay valid)."""
    dest = Path(dest)
    figs = dest.parent / "figures"
    dest.parent.mkdir(parents=True, exist_ok=True)
    src_figs = Path(out) / "figures"
    if src_figs.is_dir():
        figs.mkdir(exist_ok=True)
        for png in sorted(src_figs.glob("*.png")):
            tmp = figs / f".{png.name}.tmp"
            shutil.copyfile(png, tmp)
            tmp.replace(figs / png.name)
    atomic_write_text(dest, (Path(out) / "RESULTS.md").read_text(encoding="utf-8"))
    return dest
