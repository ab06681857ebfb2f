"""RESULTS.md of the sequential-deletion experiment, written from the trial files (every number by this code).

Per graph × method × order, over seeds (one trial each): the number of deletions N at which the mean retained
accuracy first falls below the threshold, where its 95% band crosses it (earliest: the band's lower bound;
latest: its upper bound), each seed's own N, and the retained accuracy, earlier-deletions-still-erased share
and ||ΣΔW|| after the last deletion (mean [95% band]).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

FIGURE = "accuracy_vs_deletions.png"


def _f(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _n(x) -> str:
    return "never" if x is None else str(x)


def _last(curve: dict, metric: str, digits: int = 3) -> str:
    m = curve["metrics"][metric]
    mean, lo, hi = m["mean"][-1], m["lo"][-1], m["hi"][-1]
    if mean is None:
        return "–"
    return f"{_f(mean, digits)} [{_f(lo, digits)}, {_f(hi, digits)}]" if lo is not None else _f(mean, digits)


def _cell_times(history: list[dict]) -> list[dict]:
    """Per cell, each stage's wall and CPU seconds in the invocation that did the work (the largest)."""
    cells: dict[str, dict] = {}
    for inv in history:
        for c in inv["cells"]:
            cur = cells.setdefault(c["cell"], {"cell": c["cell"], "times": {}, "trials_run": 0})
            for stage, (wall, cpu) in c["times"].items():
                if wall >= cur["times"].get(stage, (0.0, 0.0))[0]:
                    cur["times"][stage] = (wall, cpu)
            cur["trials_run"] += c["trials_run"]
    return list(cells.values())


def write_results(out: Path, cfg: dict, trials: list[dict], history: list[dict], copy_to: Path | None = None) -> Path:
    from kdel.audit.sequential_curves import condition_curves, plot_curves
    from kdel.io import atomic_write_json, atomic_write_text

    thr = float(cfg["threshold"])
    curves = condition_curves(trials, keys=("graph", "method", "order"), threshold=thr)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    plot_curves(curves, out / "figures" / FIGURE, facet=("graph", "method"), threshold=thr,
                title=f"retained accuracy vs number of deletions (mean, 95% t band over {len(cfg['seeds'])} seeds)")
    invocation = history[-1]
    atomic_write_json(out / "results.json", {"format": "kdel-seqdel-results/1", "config": cfg, "curves": curves,
                                             "invocations": history})
    prov = invocation["provenance"]
    cells = _cell_times(history)
    lines = [
        f"# {cfg['name']}", "", cfg["description"].strip(), "",
        "Written by `experiments/sequential_deletion/results_md.py` from the trial files; do not edit by hand.", "",
        "## Setup", "",
        f"- graphs {', '.join(cfg['graphs'])}; seeds {', '.join(map(str, cfg['seeds']))} (each a new KG and model); "
        f"KG {json.dumps(cfg['kg'])}; model {json.dumps(cfg['train'])}",
        f"- methods {', '.join(cfg['methods'])} at the `{cfg['site']}` site (rome/memit; npo edits every MLP), "
        f"method-default layer; orders {', '.join(cfg['orders'])}; N = {cfg['n_steps']}, measured every "
        f"{cfg['every']} deletions",
        "- retained accuracy = share of the facts recalled before any edit, and not deleted, that are still "
        "recalled (whole object, canonical prompt)",
        f"- command (last invocation): `python experiments/sequential_deletion/run.py {' '.join(invocation['argv'])}`",
        "- wall time: " + "; ".join(f"invocation {k + 1}: {inv['wall_s'] / 60:.1f} min with {inv['workers']} worker "
                                    f"process(es)" for k, inv in enumerate(history)),
        "- per cell (the invocation that did the work): " + ", ".join(
            f"{c['cell']} (KG {c['times']['kg'][0]:.0f} s; train {c['times']['train'][0]:.0f} s wall / "
            f"{c['times']['train'][1]:.0f} s CPU; audit {c['times']['audit'][0]:.0f} s wall / "
            f"{c['times']['audit'][1]:.0f} s CPU)"
            for c in cells),
        f"- code: kdel {prov.get('kdel_version')}, commit {prov.get('git_commit')}"
        f"{' (dirty)' if prov.get('git_dirty') else ''}, sources {str(prov.get('code_hash'))[:12]}; "
        f"Python {prov.get('python')}, torch {prov.get('torch')}, transformers {prov.get('transformers')}; "
        f"{prov.get('cpu')}, {prov.get('torch_threads')} torch thread(s)", "",
        f"## When does retained accuracy fall below {thr}?", "",
        "| graph | method | order | seeds | N (mean curve) | N band (earliest–latest) | N per seed | "
        f"accuracy at N={cfg['n_steps']} | earlier deletions still erased | ‖ΣΔW‖ |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in curves:
        b = c["below"]
        band = f"{_n(b['band_earliest'])}–{_n(b['band_latest'])}" if c["n_trials"] > 1 else "–"
        lines.append(f"| {c['graph']} | {c['method']} | {c['order']} | {c['n_trials']} | {_n(b['mean_curve'])} | "
                     f"{band} | {', '.join(_n(x) for x in b['per_trial'])} | {_last(c, 'global_acc')} | "
                     f"{_last(c, 'stay_deleted')} | {_last(c, 'cum_delta_norm', 1)} |")
    errors = sum(c["n_errors"] for c in curves)
    lines += ["", f"Failed trials (a step raised, the curve ends there): {errors}.", "",
              f"![retained accuracy vs number of deletions](figures/{FIGURE})", "",
              "N (mean curve): the first measured N at which the mean over seeds is below the threshold; the band "
              "columns use the 95% t interval of that mean (earliest: its lower bound crosses, latest: its upper "
              "bound crosses; 'never' = not within N). Measurement every "
              f"{cfg['every']} deletions bounds N's resolution.", ""]
    path = out / "RESULTS.md"
    atomic_write_text(path, "\n".join(lines))
    if copy_to is not None:
        copy_to = Path(copy_to)
        copy_to.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(copy_to, "\n".join(lines))
        (copy_to.parent / "figures").mkdir(exist_ok=True)
        shutil.copyfile(out / "figures" / FIGURE, copy_to.parent / "figures" / FIGURE)
    return path
