"""Heatmaps of a trace: normalised effect per [layer x token], one PNG per component, tokens as labels."""

from __future__ import annotations

from pathlib import Path

from kdel.io import atomic_write_bytes


def save_heatmaps(trace, out_dir, metric: str | None = None) -> list[Path]:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = metric or ("prob" if "prob" in trace.config.metrics else trace.config.metrics[0])
    out_dir = Path(out_dir)
    paths = []
    labels = [t + ("*" if i in trace.subject_positions else "") for i, t in enumerate(trace.tokens)]
    for comp in trace.patched:
        eff = trace.normalized(comp, metric)
        fig, ax = plt.subplots(figsize=(1.2 + 0.45 * eff.shape[0], 1.0 + 0.35 * len(labels)))
        im = ax.imshow(eff.T, cmap={"resid": "Purples", "mlp": "Greens", "attn": "Reds"}.get(comp, "viridis"),
                       aspect="auto", vmin=min(0.0, float(abs(eff).max(initial=0) * -1) if (eff < 0).any() else 0.0))
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xticks(range(eff.shape[0]))
        ax.set_xlabel("layer")
        win = f", window {trace.config.window}" if comp != "resid" and trace.config.window > 1 else ""
        ax.set_title(f"fact {trace.fact_id}: {comp} ({trace.config.corruption}, {trace.config.direction}{win})\n"
                     f"normalised {metric}, o = {trace.target_token}", fontsize=8)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        path = out_dir / f"fact{trace.fact_id}_{comp}_{metric}.png"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths
