"""Figures of the validation: calibration of the learned flip probability, and predicted vs measured
collateral per case."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_figures(out: Path, rows, model, results: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = {}

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("both", "BA + ER"),):
        rel = results[key]["flipped_calibration"]["reliability"]
        x = [r["mean_predicted"] for r in rel]
        y = [r["observed"] for r in rel]
        ax[0].plot(x, y, "o-", label=f"{label} (test seeds)")
    ax[0].plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    ax[0].set_xlabel("predicted P(flip), calibrated")
    ax[0].set_ylabel("observed flip rate")
    ax[0].set_title("calibration: probe facts")
    ax[0].legend(fontsize=8)
    pred = np.bincount(rows.case, weights=model.p_drop(rows.X), minlength=rows.n_cases) / np.maximum(
        np.bincount(rows.case, minlength=rows.n_cases), 1)
    meas = np.asarray(rows.collateral)
    topo = np.array([m["audit"].rstrip("/").rsplit("/", 1)[-1].split("-")[0] for m in rows.meta])
    for t, c in (("ba", "tab:red"), ("er", "tab:blue")):
        m = topo == t
        ax[1].scatter(pred[m], meas[m], s=10, alpha=0.6, color=c, label=t.upper())
    lim = [min(pred.min(), meas.min()), max(pred.max(), meas.max())]
    ax[1].plot(lim, lim, "k--", lw=1)
    ax[1].set_xlabel("predicted mean p drop of the other facts")
    ax[1].set_ylabel("measured")
    ax[1].set_title("collateral per case (test seeds)")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    p = out / "calibration_and_collateral.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths["calibration"] = str(p)
    return paths
