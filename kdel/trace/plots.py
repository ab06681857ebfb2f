"""Heatmaps of a trace: normalised effect per [layer x token], one PNG per component.

- Colours: a map with negative cells (a patch that moves the metric away from the clean run, common for MLP and
  attention maps) uses a diverging colormap centred at 0 with symmetric limits, so 0 is white and the sign is
  visible; a map without negative cells uses a sequential colormap from 0. Untraced cells are grey.
- Token labels are readable: byte-level BPE's space marker `Ġ` and SentencePiece's `▁` are shown as a visible
  space `␣`, newlines as `↵`; subject tokens are starred.
- Attribution-patching maps say "attribution (approximate)" in the title.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from kdel.io import atomic_write_bytes

SEQUENTIAL = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}
_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def display_token(token: str) -> str:
    """A token as a label: BPE space markers as a visible space, newlines and byte tokens decoded."""
    t = token.replace("Ġ", "␣").replace("▁", "␣").replace("Ċ", "↵").replace("\n", "↵")
    t = _BYTE.sub(lambda m: "↵" if m.group(1) == "0A" else chr(int(m.group(1), 16)), t)
    return t if t else "∅"


def color_scale(eff: np.ndarray, component: str) -> dict:
    """imshow arguments: diverging and centred at 0 when the map has negative values, else sequential from 0."""
    finite = eff[np.isfinite(eff)]
    top = float(np.abs(finite).max()) if finite.size else 1.0
    top = top if top > 0 else 1.0
    if finite.size and finite.min() < 0:
        return {"cmap": "RdBu_r", "vmin": -top, "vmax": top}
    return {"cmap": SEQUENTIAL.get(component, "viridis"), "vmin": 0.0, "vmax": top}


def save_heatmaps(trace, out_dir, metric: str | None = None) -> list[Path]:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = metric or ("prob" if "prob" in trace.config.metrics else trace.config.metrics[0])
    out_dir = Path(out_dir)
    paths = []
    labels = [display_token(t) + ("*" if i in trace.subject_positions else "") for i, t in enumerate(trace.tokens)]
    for comp in trace.patched:
        eff = trace.normalized(comp, metric)
        scale = color_scale(eff, comp)
        cmap = matplotlib.colormaps[scale.pop("cmap")].with_extremes(bad="lightgrey")
        fig, ax = plt.subplots(figsize=(1.2 + 0.45 * eff.shape[0], 1.0 + 0.35 * len(labels)))
        im = ax.imshow(eff.T, cmap=cmap, aspect="auto", **scale)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xticks(range(eff.shape[0]))
        ax.set_xlabel("layer")
        win = f", window {trace.config.window}" if comp != "resid" and trace.config.window > 1 else ""
        how = "attribution (approximate)" if trace.approximate else "exact"
        ax.set_title(f"fact {trace.fact_id}: {comp} ({trace.config.corruption}, {trace.config.direction}{win}, {how})\n"
                     f"normalised {metric}, o = {display_token(trace.target_token)}", fontsize=8)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        path = out_dir / f"fact{trace.fact_id}_{comp}_{metric}.png"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths
