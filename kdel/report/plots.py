"""The report's figures (matplotlib, Agg), drawn from kdel-case/1 dicts; each writes plots/<name>.png.

Series = deletion method (and edit site when an audit has several); panels side by side = graphs (BA, ER)
when the report covers several audits. Successful deletions are filled markers, failed ones hollow: a
failed edit's "side effects" are not those of a deletion, so binned means are drawn for each separately.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdel.audit.metrics import SIDE_GROUPS, case_metrics
from kdel.io import atomic_write_bytes
from kdel.report.data import AuditData, popularity_label
from kdel.report.plot_stats import _binned, _rho_note, cluster_ci, fact_rho, summary_rho

DPI = 90
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
GRAPH_MARKERS = ("o", "s", "^", "D")

SCATTER_METRICS = (
    ("global.mean_p_drop_excluding_target", "mean drop of p(true object)\nover all other facts"),
    ("global.flip_rate_excluding_target", "flip rate (correct → wrong)\nover all other facts"),
    ("same_subject.mean_p_drop", "mean drop of p(true object)\nsame-subject facts"),
)


@dataclass
class Plot:
    name: str  # file stem under plots/
    path: Path
    title: str
    caption: str


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def series_key(case: dict, multi_site: bool) -> str:
    s = case["spec"]
    return f"{s['method']} @ {s['site']}" if multi_site else s["method"]


def _series(audits: list[AuditData]) -> tuple[list[str], bool]:
    sites = {c["spec"]["site"] for a in audits for c in a.ok_cases}
    multi = len(sites) > 1
    keys = sorted({series_key(c, multi) for a in audits for c in a.ok_cases})
    return keys, multi


def _colors(keys: list[str]) -> dict[str, str]:
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)}


def _values(cases: list[dict], metric: str) -> np.ndarray:
    out = []
    for c in cases:
        v = case_metrics(c).get(metric)
        out.append(np.nan if v is None else float(v))
    return np.asarray(out, dtype=np.float64)


def _legend_handles(keys: list[str], colors: dict[str, str]):
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[k], marker="o", lw=1.6) for k in keys]
    handles += [Line2D([], [], color="#444", ls="-", marker="o"),
                Line2D([], [], color="#444", ls="--", marker="o", mfc="none")]
    return handles, list(keys) + ["successful deletions", "failed deletions"]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def _jitter(n: int, scale: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-scale, scale, size=n)


def plot_side_effect_vs_degree(audits: list[AuditData], path: Path) -> Plot:
    plt = _plt()
    keys, multi = _series(audits)
    colors = _colors(keys)
    nrow, ncol = len(SCATTER_METRICS), len(audits)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol + 0.6, 3.0 * nrow), squeeze=False, sharex=True,
                             sharey="row")
    for j, a in enumerate(audits):
        for i, (metric, ylabel) in enumerate(SCATTER_METRICS):
            ax = axes[i][j]
            notes = []
            for k in keys:
                cs = [c for c in a.ok_cases if series_key(c, multi) == k]
                if not cs:
                    continue
                deg = np.array([c["fact"]["subject_degree"] for c in cs], dtype=float)
                y = _values(cs, metric)
                succ = np.array([c["success"] for c in cs])
                x = deg + _jitter(len(deg), 0.15, seed=i)
                ax.scatter(x[succ], y[succ], s=16, color=colors[k], alpha=0.55, linewidths=0)
                ax.scatter(x[~succ], y[~succ], s=16, facecolors="none", edgecolors=colors[k], alpha=0.7)
                for outcome, sel, ls in (("success", succ, "-"), ("failed", ~succ, "--")):
                    pts = _binned([c for c, s in zip(cs, sel) if s], metric)
                    if not pts:
                        continue
                    xs = [p[0] for p in pts]
                    ms = [p[1]["mean"] for p in pts]
                    err = [[m - (p[1]["lo"] if p[1]["lo"] is not None else m) for m, p in zip(ms, pts)],
                           [(p[1]["hi"] if p[1]["hi"] is not None else m) - m for m, p in zip(ms, pts)]]
                    ax.errorbar(xs, ms, yerr=err, color=colors[k], ls=ls, lw=1.6, capsize=3, marker="_")
                r = summary_rho(a, cs[0]["spec"], metric)
                note = r and _rho_note(k, r["rho"], r["ci_lo"], r["ci_hi"], r["n_facts"])
                if note:
                    notes.append(note)
            if notes:
                ax.text(0.02, 0.97, "\n".join(notes), transform=ax.transAxes, va="top", fontsize=7,
                        bbox=dict(boxstyle="round", fc="white", ec="#ccc", alpha=0.85))
            ax.set_ylabel(ylabel, fontsize=8)
            if i == 0:
                ax.set_title(f"{a.label}", fontsize=11, fontweight="bold")
            if i == nrow - 1:
                ax.set_xlabel(popularity_label(audits))
            ax.grid(alpha=0.25)
    handles, labels = _legend_handles(keys, colors)
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.035 * math.ceil(len(labels) / 3) / max(1, nrow / 3), 1, 1))
    _save(fig, path)
    return Plot("side_effect_vs_degree", path, "Side effect vs subject popularity",
                "Each point is one deletion case (filled: successful deletion, hollow: failed). Lines: mean per "
                "subject popularity bin (at the bin's median degree), solid for successful "
                "and dashed for failed deletions (95% cluster-bootstrap CIs over subjects). ρ: Spearman correlation with "
                "degree over successful deletions, each fact once (mean over its layers), with its 95% CI.")


def _bins_of(audits: list[AuditData]) -> list[int]:
    return sorted({int(c["fact"]["subject_bin"]) for a in audits for c in a.ok_cases})


def group_bin_table(cases: list[dict], bins: list[int], metric: str, outcome: str = "success") -> np.ndarray:
    """[side group x popularity bin] mean of `groups.<g>.<metric>` over cases with that outcome (nan = none)."""
    sel = [c for c in cases if outcome == "all" or c["success"] == (outcome == "success")]
    out = np.full((len(SIDE_GROUPS), len(bins)), np.nan)
    for gi, g in enumerate(SIDE_GROUPS):
        for bi, b in enumerate(bins):
            vals = [c["groups"].get(g, {}).get(metric) for c in sel if int(c["fact"]["subject_bin"]) == b]
            vals = [float(v) for v in vals if v is not None]
            if vals:
                out[gi, bi] = float(np.mean(vals))
    return out


def plot_group_damage_by_bin(audits: list[AuditData], path: Path) -> Plot:
    plt = _plt()
    from matplotlib.colors import TwoSlopeNorm

    keys, multi = _series(audits)
    bins = _bins_of(audits)
    panels = [(a, k) for k in keys for a in audits]
    ncol, nrow = len(audits), len(keys)
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.6 + (1.8 + 0.75 * max(len(bins), 3)) * ncol, 0.5 + 2.7 * nrow),
                             squeeze=False, layout="constrained")
    tables = {}
    for a, k in panels:
        cs = [c for c in a.ok_cases if series_key(c, multi) == k]
        tables[(a.label, k)] = (group_bin_table(cs, bins, "mean_p_drop"), group_bin_table(cs, bins, "flip_rate"))
    finite = [np.nanmax(np.abs(t[0])) for t in tables.values() if np.isfinite(t[0]).any()]
    vmax = max([v for v in finite if v > 0] + [0.05])
    norm = TwoSlopeNorm(vmin=-vmax, vcenter=0.0, vmax=vmax)
    im = None
    for idx, (a, k) in enumerate(panels):
        ax = axes[idx // ncol][idx % ncol]
        drop, flip = tables[(a.label, k)]
        ax.set_title(f"{a.label} — {k}", fontsize=9)
        if not np.isfinite(drop).any():
            _empty(ax, "no successful deletion")
            continue
        im = ax.imshow(np.ma.masked_invalid(drop), cmap="RdBu_r", norm=norm, aspect="auto")
        for gi in range(drop.shape[0]):
            for bi in range(drop.shape[1]):
                if np.isfinite(drop[gi, bi]):
                    txt = f"{drop[gi, bi]:+.2f}" + (f"\n{100 * flip[gi, bi]:.0f}%" if np.isfinite(flip[gi, bi]) else "")
                    ax.text(bi, gi, txt, ha="center", va="center", fontsize=6.5,
                            color="white" if abs(drop[gi, bi]) > 0.6 * vmax else "black")
                else:
                    ax.text(bi, gi, "–", ha="center", va="center", fontsize=7, color="#999")
        ax.set_xticks(range(len(bins)), [str(b) for b in bins], fontsize=7)
        ax.set_yticks(range(len(SIDE_GROUPS)), SIDE_GROUPS if idx % ncol == 0 else [""] * len(SIDE_GROUPS),
                      fontsize=7)
        if idx // ncol == nrow - 1:
            ax.set_xlabel("subject popularity bin (0 = least popular)", fontsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6, label="mean drop of p(true object)")
    _save(fig, path)
    return Plot("group_damage_by_bin", path, "Damage per probe group and popularity bin",
                "Successful deletions only. Cell colour and top number: mean drop of p(true object) over the "
                "group's facts that were recalled before the edit (red: p fell, blue: p rose); bottom number: "
                "per-fact flip rate (correct → wrong). '–': no such fact in any case of that bin.")


def plot_hase(audits: list[AuditData], path: Path) -> Plot:
    plt = _plt()
    keys, multi = _series(audits)
    fig, axes = plt.subplots(len(keys), 2, figsize=(10.5, 3.0 * len(keys) + 0.4), squeeze=False)
    for i, k in enumerate(keys):
        ax_t, ax_l = axes[i]
        any_te = False
        for gi, a in enumerate(audits):
            cs = [c for c in a.ok_cases if series_key(c, multi) == k]
            if not cs:
                continue
            y = _values(cs, "hase.efficacy_score")
            te = _values(cs, "hase.tracing_effect")
            layer = np.array([c["spec"]["layer"] for c in cs], dtype=float)
            m = GRAPH_MARKERS[gi % len(GRAPH_MARKERS)]
            col = PALETTE[gi % len(PALETTE)]
            if np.isfinite(te).any():
                any_te = True
                ax_t.scatter(te, y, s=18, marker=m, color=col, alpha=0.6, label=a.label, linewidths=0)
            off = (gi - (len(audits) - 1) / 2) * 0.15
            ax_l.scatter(layer + off + _jitter(len(layer), 0.04, gi), y, s=14, marker=m, color=col, alpha=0.45,
                         linewidths=0, label=a.label)
            for lay in sorted(set(layer.tolist())):
                ci = cluster_ci(y[layer == lay], [c for c, keep in zip(cs, layer == lay) if keep])
                if ci["mean"] is not None and ci["lo"] is not None:
                    ax_l.errorbar([lay + off], [ci["mean"]], yerr=[[ci["mean"] - ci["lo"]], [ci["hi"] - ci["mean"]]],
                                  color=col, marker=m, ms=6, capsize=3, mec="black", lw=1.5)
            reg = _regression(a, cs[0]["spec"], "hase.efficacy_score")
            if reg and reg.get("r2_layer") is not None:
                ax_l.text(0.02, 0.03 + 0.1 * gi, f"{a.label}: R²(layer)={reg['r2_layer']:.2f}", transform=ax_l.transAxes,
                          fontsize=7, color=col)
            if reg and reg.get("r2_tracing") is not None:
                ax_t.text(0.02, 0.03 + 0.1 * gi, f"{a.label}: R²(tracing)={reg['r2_tracing']:.2f}",
                          transform=ax_t.transAxes, fontsize=7, color=col)
        if not any_te:
            _empty(ax_t, "no tracing effect recorded\n(audit run with --no-tracing-effect)")
        ax_t.set_xlabel("tracing effect at the edited layer (MLP, window 5)", fontsize=8)
        ax_l.set_xlabel("edited layer", fontsize=8)
        from matplotlib.ticker import MaxNLocator

        ax_l.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in (ax_t, ax_l):
            ax.set_ylabel("edit success\n(Hase erasure score)", fontsize=8)
            ax.set_ylim(-0.05, 1.05)
            ax.grid(alpha=0.25)
        ax_t.set_title(f"{k}: success vs tracing effect", fontsize=9)
        ax_l.set_title(f"{k}: success vs layer (mean, 95% CI)", fontsize=9)
        if len(audits) > 1:
            ax_l.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    _save(fig, path)
    return Plot("hase_success_vs_tracing_and_layer", path, "Does localization inform editing? (Hase et al. style)",
                "Edit success (Hase et al.'s erasure score max(0, (p_pre − p_post)/p_pre)) against the causal "
                "tracing effect at the edited layer (left) and against the layer itself (right). R² of the "
                "one-variable fits from the regression table.")


def _regression(a: AuditData, spec: dict, y: str) -> dict | None:
    for r in (a.summary or {}).get("regressions", []):
        if r["method"] == spec["method"] and r["site"] == spec["site"] and r["objective"] == spec["objective"] \
                and r["y"] == y:
            return r
    return None


def plot_delta_norm_vs_degree(audits: list[AuditData], path: Path) -> Plot:
    plt = _plt()
    keys, multi = _series(audits)
    colors = _colors(keys)
    fig, axes = plt.subplots(1, len(audits), figsize=(5.2 * len(audits) + 0.4, 3.4), squeeze=False, sharey=True)
    for j, a in enumerate(audits):
        ax = axes[0][j]
        notes = []
        all_dn = []
        for k in keys:
            cs = [c for c in a.ok_cases if series_key(c, multi) == k]
            if not cs:
                continue
            deg = np.array([c["fact"]["subject_degree"] for c in cs], dtype=float)
            dn = np.array([c["delta_norm"] for c in cs], dtype=float)
            all_dn += dn.tolist()
            succ = np.array([c["success"] for c in cs])
            x = deg + _jitter(len(deg), 0.15, j)
            ax.scatter(x[succ], dn[succ], s=18, color=colors[k], alpha=0.6, linewidths=0, label=f"{k} (success)")
            ax.scatter(x[~succ], dn[~succ], s=18, facecolors="none", edgecolors=colors[k], alpha=0.8,
                       label=f"{k} (failed)")
            note = _rho_note(k, *fact_rho(cs, "delta_norm"))
            if note:
                notes.append(note)
        pos = [v for v in all_dn if v > 0]
        if pos and max(pos) / min(pos) > 50:
            ax.set_yscale("log")
        if notes:
            ax.text(0.02, 0.97, "\n".join(notes), transform=ax.transAxes, va="top", fontsize=7,
                    bbox=dict(boxstyle="round", fc="white", ec="#ccc", alpha=0.85))
        ax.set_title(a.label, fontsize=11, fontweight="bold")
        ax.set_xlabel(popularity_label(audits))
        ax.set_ylabel("‖ΔW‖ (Frobenius, all touched matrices)", fontsize=8)
        ax.grid(alpha=0.25)
        if j == len(audits) - 1:
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(fig, path)
    return Plot("delta_norm_vs_degree", path, "The confound: edit size ‖ΔW‖ vs popularity",
                "If popular subjects get larger updates, damage that grows with degree may be the edit's size "
                "rather than popularity itself; the partial Spearman correlations control for ‖ΔW‖. ρ: Spearman "
                "over the method's facts (each once, mean ‖ΔW‖ over its layers; successful and failed), with its "
                "95% cluster-bootstrap CI.")


def write_all_plots(audits: list[AuditData], plots_dir: Path, comparisons: list[dict] | None = None) -> list[Plot]:
    """Every figure of the report, written under `plots_dir`; returned in the report's order (the primary
    hypothesis's figure first: the report shows it on its first screen)."""
    from kdel.report.primary_plot import plot_primary

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    plots = [
        plot_primary(audits, plots_dir / "primary.png", comparisons),
        plot_side_effect_vs_degree(audits, plots_dir / "side_effect_vs_degree.png"),
        plot_group_damage_by_bin(audits, plots_dir / "group_damage_by_bin.png"),
        plot_delta_norm_vs_degree(audits, plots_dir / "delta_norm_vs_degree.png"),
        plot_hase(audits, plots_dir / "hase_success_vs_tracing_and_layer.png"),
    ]
    from kdel.report.trace_plots import plot_trace_examples, plot_trace_profiles

    prof = plot_trace_profiles(audits, plots_dir / "trace_layer_profiles.png")
    if prof is not None:
        plots.append(prof)
    plots += plot_trace_examples(audits, plots_dir)
    return plots

