"""Every figure of the report, in the report's order (kdel.report.plots, primary_plot and trace_plots draw them)."""

from __future__ import annotations

from pathlib import Path

from kdel.report.data import AuditData
from kdel.report.plots import (
    Plot,
    plot_delta_norm_vs_degree,
    plot_group_damage_by_bin,
    plot_hase,
    plot_side_effect_vs_degree,
)
from kdel.report.primary_plot import plot_primary
from kdel.report.trace_plots import plot_trace_examples, plot_trace_profiles


def write_all_plots(audits: list[AuditData], plots_dir: Path, comparisons: list[dict] | None = None) -> list[Plot]:
    """Every figure of the report, written under `plots_dir`; returned in the report's order (the primary
    hypothesis's figure first: the report shows it on its first screen)."""
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    plots = [
        plot_primary(audits, plots_dir / "primary.png", comparisons),
        plot_side_effect_vs_degree(audits, plots_dir / "side_effect_vs_degree.png"),
        plot_group_damage_by_bin(audits, plots_dir / "group_damage_by_bin.png"),
        plot_delta_norm_vs_degree(audits, plots_dir / "delta_norm_vs_degree.png"),
        plot_hase(audits, plots_dir / "hase_success_vs_tracing_and_layer.png"),
    ]
    prof = plot_trace_profiles(audits, plots_dir / "trace_layer_profiles.png")
    if prof is not None:
        plots.append(prof)
    plots += plot_trace_examples(audits, plots_dir)
    return plots

