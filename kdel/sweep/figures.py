"""The sweep's figures (matplotlib, Agg), drawn from results.json's numbers and the cells' cases.

- primary_per_seed.png: the primary hypothesis per seed with CIs and pooled: ρ on each graph (left) and the
  contrast Δz = atanh ρ_A − atanh ρ_B (right); the pooled estimate is the diamond.
- side_effect_vs_degree.png: the primary metric of each deleted fact vs its predictor, graph A beside graph B,
  every seed's facts (one colour per seed) with binned means.
- hase_r2.png: Hase et al.'s R² of edit success on layer, on tracing effect and on both, per seed and the
  mean over seeds with its CI, beside the paper's GPT-J values.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from kdel.io import atomic_write_bytes

DPI = 90
SEED_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _z(r):
    return None if r is None else math.atanh(max(-0.9999, min(0.9999, r)))


def primary_per_seed(primary: dict, path: Path) -> Path | None:
    if not primary or not primary.get("per_seed"):
        return None
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 0.45 * len(primary["per_seed"]) + 2.2))
    seeds = [r["seed"] for r in primary["per_seed"]]
    ys = np.arange(len(seeds))[::-1] + 1
    for off, side, colour in ((0.12, "a", "#d62728"), (-0.12, "b", "#1f77b4")):
        for y, r in zip(ys, primary["per_seed"]):
            e = r.get(side) or {}
            if e.get("estimate") is None:
                continue
            ax1.plot([e["estimate"]], [y + off], "o", color=colour)
            if e.get("lo") is not None:
                ax1.plot([e["lo"], e["hi"]], [y + off] * 2, "-", color=colour)
        pooled = primary["pooled"].get(side) or {}
        if pooled.get("estimate") is not None:
            _diamond(ax1, pooled["estimate"], pooled.get("lo"), pooled.get("hi"), 2 * off, colour,
                     primary[side] + " (pooled)", half=0.12)
    ax1.axvline(0, color="grey", lw=0.8)
    ax1.set_yticks(list(ys) + [0])
    ax1.set_yticklabels([f"seed {s}" for s in seeds] + ["pooled"])
    ax1.set_xlabel("Spearman ρ (per fact; CI: cluster bootstrap over subjects)")
    ax1.legend(loc="best", fontsize=7)
    for y, r in zip(ys, primary["per_seed"]):
        a, b, d = r.get("a") or {}, r.get("b") or {}, r.get("difference") or {}
        if a.get("estimate") is None or b.get("estimate") is None:
            continue
        dz = _z(a["estimate"]) - _z(b["estimate"])
        ax2.plot([dz], [y], "ko")
        if d.get("se"):
            ax2.plot([dz - 1.96 * d["se"], dz + 1.96 * d["se"]], [y, y], "k-")
    pd = primary["pooled"]["difference"]
    if pd.get("d") is not None:
        _diamond(ax2, pd["d"], pd.get("d_lo"), pd.get("d_hi"), 0, "k", "pooled (random effects)")
    ax2.axvline(0, color="grey", lw=0.8)
    ax2.set_yticks(list(ys) + [0])
    ax2.set_yticklabels([])
    ax2.set_xlabel(f"Δz = atanh ρ({primary['a']}) − atanh ρ({primary['b']})")
    fig.suptitle("Primary hypothesis per seed and pooled", fontsize=11)
    return _save(fig, path)


def _diamond(ax, x, lo, hi, y, colour, label, half: float = 0.25):
    lo = x if lo is None else lo
    hi = x if hi is None else hi
    ax.fill([lo, x, hi, x], [y, y + half, y, y - half], color=colour, alpha=0.6, label=label)


def _fact_columns(cases: list[dict], spec: dict):
    """(predictor, metric) per deleted fact for the primary spec (the stats code's fact table)."""
    from kdel.audit.primary import parse_primary, primary_table

    t = primary_table(cases, parse_primary({k: v for k, v in spec.items() if k != "declared"}))
    if t is None:
        return np.array([]), np.array([])
    return t.columns[spec["predictor"]], t.columns[spec["metric"]]


def side_effect_vs_degree(primary: dict, cases_by_cell: dict, path: Path) -> Path | None:
    """`primary`: the primary result, or a comparison row (its spec is then its first seed's)."""
    if not primary or not primary.get("seeds") or not primary.get("per_seed"):
        return None
    plt = _plt()
    spec = primary.get("spec") or primary["per_seed"][0]["spec"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, cond in zip(axes, (primary["a"], primary["b"])):
        xs_all, ys_all = [], []
        for i, seed in enumerate(primary["seeds"]):
            cases = cases_by_cell.get((cond, seed))
            if not cases:
                continue
            x, y = _fact_columns(cases, spec)
            ok = np.isfinite(x) & np.isfinite(y)
            ax.scatter(x[ok], y[ok], s=12, alpha=0.6, color=SEED_COLOURS[i % len(SEED_COLOURS)], label=f"seed {seed}")
            xs_all.append(x[ok])
            ys_all.append(y[ok])
        if xs_all and sum(len(x) for x in xs_all):
            x, y = np.concatenate(xs_all), np.concatenate(ys_all)
            edges = np.unique(np.quantile(x, np.linspace(0, 1, 6)))
            if len(edges) > 1:
                idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
                mids = [(x[idx == k].mean(), y[idx == k].mean()) for k in range(len(edges) - 1) if (idx == k).any()]
                ax.plot([m[0] for m in mids], [m[1] for m in mids], "k-s", lw=1.5, label="binned mean (all seeds)")
        ax.set_title(cond, fontsize=10)
        ax.set_xlabel(spec["predictor"].replace("_", " "))
        ax.legend(fontsize=7)
    axes[0].set_ylabel(spec["metric"])
    fig.suptitle(f"{spec['metric']} vs {spec['predictor']} ({spec['method']} @ {spec['site']}, one point per fact)",
                 fontsize=10)
    return _save(fig, path)


def hase_r2(rows: list[dict], paper: dict, path: Path) -> Path | None:
    rows = [r for r in rows if any(s.get("r2_layer") is not None for s in r["per_seed"])]
    if not rows:
        return None
    rows = [r for r in rows if r["y"] == rows[0]["y"]]  # one edit-success measure per figure
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows) + 2), 4))
    keys = (("r2_layer", "layer", "#1f77b4"), ("r2_tracing", "tracing effect", "#d62728"),
            ("r2_layer_x_tracing", "layer × tracing", "#2ca02c"))
    width = 0.25
    for j, (k, label, colour) in enumerate(keys):
        for i, r in enumerate(rows):
            x = i + (j - 1) * width
            vals = [s.get(k) for s in r["per_seed"] if s.get(k) is not None]
            ax.scatter([x] * len(vals), vals, s=10, color=colour, alpha=0.5)
            m = r["pooled"][k]
            if m.get("mean") is not None:
                ax.bar(x, m["mean"], width=width * 0.9, color=colour, alpha=0.35, label=label if i == 0 else None)
                if m.get("lo") is not None:
                    ax.plot([x, x], [m["lo"], m["hi"]], "k-", lw=1)
    for val, style, label in ((paper.get("r2_layer"), "--", "paper: layer (GPT-J)"),
                              (paper.get("r2_layer_and_tracing"), ":", "paper: layer + tracing (GPT-J)")):
        if val is not None:
            ax.axhline(val, color="grey", ls=style, lw=1, label=label)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{r['condition']}\n{r['method']}@{r['site']}\n{r['objective']}" for r in rows], fontsize=7)
    ax.set_ylabel(f"R² of {rows[0]['y']}")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Hase et al.'s regressions: per seed (dots), mean over seeds (bars, t CI)", fontsize=10)
    return _save(fig, path)


def write_figures(results: dict, cases_by_cell: dict, folder: Path) -> list[Path]:
    from kdel.sweep.analyses import PAPER_HASE

    folder.mkdir(parents=True, exist_ok=True)
    scatter_source = results.get("primary") or next(iter(results.get("comparisons") or []), None)
    made = [primary_per_seed(results.get("primary"), folder / "primary_per_seed.png"),
            side_effect_vs_degree(scatter_source, cases_by_cell, folder / "side_effect_vs_degree.png"),
            hase_r2(results.get("hase") or [], PAPER_HASE, folder / "hase_r2.png")]
    return [p for p in made if p is not None]
