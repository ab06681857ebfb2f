"""The report's causal-tracing figures: layer profiles and example heatmaps, from the audit's traces."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from kdel.report.data import AuditData
from kdel.report.plots import Plot, _plt, _save


def plot_trace_profiles(audits: list[AuditData], path: Path) -> Plot | None:
    """Mean normalised effect per layer (MLP / attention / residual) at the last subject token and the last
    token, over the traced facts of each graph: where the lookup happens."""
    from kdel.trace import load_traces

    traced = [(a, load_traces(a.traces_dir)) for a in audits if a.traces_dir is not None]
    traced = [(a, ts) for a, ts in traced if ts]
    if not traced:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(traced), figsize=(5.2 * len(traced) + 0.4, 3.4), squeeze=False)
    comp_col = {"resid": "#6a3d9a", "mlp": "#33a02c", "attn": "#e31a1c"}
    for j, (a, ts) in enumerate(traced):
        ax = axes[0][j]
        metric = "prob" if "prob" in ts[0].config.metrics else ts[0].config.metrics[0]
        for comp in ts[0].patched:
            for site, ls in (("subject_last", "-"), ("last", "--")):
                rows = [t.layer_profile(comp, metric, t.position(site)) for t in ts if comp in t.patched]
                if not rows:
                    continue
                prof = np.nanmean(np.vstack(rows), axis=0)
                ax.plot(range(len(prof)), prof, ls=ls, marker="o", ms=3, color=comp_col.get(comp, "#333"),
                        label=f"{comp} @ {site}")
        ax.set_title(f"{a.label}: mean over {len(ts)} traced facts ({ts[0].config.corruption}, "
                     f"{ts[0].config.direction})", fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"normalised effect ({metric})", fontsize=8)
        ax.grid(alpha=0.25)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return Plot("trace_layer_profiles", path, "Where is the fact looked up? Layer profiles of causal tracing",
                "Mean normalised effect of restoring one component's output (denoising) per layer, at the last "
                "subject token (solid) and at the prompt's last token (dashed). ROME edits the MLP at the "
                "subject's peak; in small models trained from scratch the lookup may sit at the last token.")


def plot_trace_examples(audits: list[AuditData], plots_dir: Path, per_graph: int = 2,
                        components: tuple[str, ...] = ("mlp", "resid")) -> list[Plot]:
    """Example tracing heatmaps (kdel.trace.plots, token labels) of the most and least popular traced subjects."""
    from kdel.trace import load_traces
    from kdel.trace.plots import save_heatmaps

    out = []
    for a in audits:
        if a.traces_dir is None:
            continue
        ts = load_traces(a.traces_dir)
        if not ts:
            continue
        ts = sorted(ts, key=lambda t: (t.subject_popularity, t.fact_id))
        picks = [ts[-1], ts[0]] if len(ts) > 1 else ts[:1]
        for t in picks[:per_graph]:
            with tempfile.TemporaryDirectory() as tmp:
                for src in save_heatmaps(t, tmp):
                    comp = src.stem.split("_")[1] if src.stem.count("_") >= 2 else src.stem
                    if comp not in components:
                        continue
                    name = f"trace_{a.label.lower()}_fact{t.fact_id}_{comp}"
                    dest = Path(plots_dir) / f"{name}.png"
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dest)
                    out.append(Plot(name, dest, f"{a.label}: fact {t.fact_id}, {comp}",
                                    f"“{t.prompt} → {t.target}” (subject degree {t.subject_popularity:g}); "
                                    f"'*' marks subject tokens."))
    return out
