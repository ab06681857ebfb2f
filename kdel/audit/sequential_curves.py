"""Mean curves with 95% bands over the trials of a sequential-deletion audit, the N at which accuracy falls
below a threshold, and the figure (accuracy vs number of deletions, one line per order).

Band: the t interval of the mean over trials at each checkpoint, mean ± t(0.975, k−1)·s/√k (k trials with a
value there; no band with one trial). Trials are independent replications (different seeds: a different
order, and for seeds across experiments a different KG and model), so a t interval over them is the plain
choice; the trials share no deleted fact by design only in the random orders, which is why the bands of
degree orders (same facts, other tie-breaks) are narrow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BASE_METRICS = ("global_acc", "global_acc_all", "deleted_recall", "stay_deleted", "removed_all_templates",
                "cum_delta_norm", "mean_p_drop")
CONDITION_KEYS = ("method", "site", "layer", "order")
THRESHOLD = 0.9


def metric_value(point: dict, name: str) -> float | None:
    if name.startswith("groups."):
        v = point.get("groups", {}).get(name.split(".", 1)[1], {}).get("acc")
    else:
        v = point.get(name)
    return None if v is None or not math.isfinite(float(v)) else float(v)


def bounds_of(name: str) -> tuple[float, float]:
    """The range a metric's values (and so its band) can take: rates lie in [0, 1]."""
    if name == "cum_delta_norm":
        return 0.0, math.inf
    if name == "mean_p_drop":
        return -1.0, 1.0
    return 0.0, 1.0


def band(values: Sequence[float | None], level: float = 0.95,
         bounds: tuple[float, float] = (-math.inf, math.inf)) -> dict:
    """Mean and t-interval of the finite values, the interval clipped to `bounds`."""
    from scipy.stats import t

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    k = len(x)
    if k == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    mean = float(x.mean())
    if k < 2:
        return {"mean": mean, "lo": None, "hi": None, "n": k}
    half = float(t.ppf(0.5 + level / 2, k - 1) * x.std(ddof=1) / math.sqrt(k))
    return {"mean": mean, "lo": max(bounds[0], mean - half), "hi": min(bounds[1], mean + half), "n": k}


def metric_names(trials: list[dict]) -> list[str]:
    groups = sorted({g for tr in trials for p in tr.get("checkpoints", []) for g in p.get("groups", {})})
    return list(BASE_METRICS) + [f"groups.{g}" for g in groups]


def first_below(points: list[dict], threshold: float = THRESHOLD, metric: str = "global_acc") -> int | None:
    """The first number of deletions at which `metric` is below `threshold` (None: never, in this trial)."""
    for p in points:
        v = metric_value(p, metric)
        if v is not None and v < threshold:
            return int(p["step"])
    return None


def _crossing(steps: list[int], values: list[float | None], threshold: float) -> int | None:
    for s, v in zip(steps, values):
        if v is not None and v < threshold:
            return s
    return None


def condition_curves(trials: list[dict], keys: Sequence[str] = CONDITION_KEYS, threshold: float = THRESHOLD,
                     level: float = 0.95) -> list[dict]:
    """One entry per condition (the trials' `spec` values of `keys`): steps, every metric's mean/lo/hi/n per
    step, and when global accuracy falls below `threshold` (per trial, on the mean curve and on the band)."""
    by: dict[tuple, list[dict]] = {}
    for tr in trials:
        by.setdefault(tuple(tr["spec"].get(k) for k in keys), []).append(tr)
    names = metric_names(trials)
    out = []
    for cond in sorted(by, key=lambda c: tuple("" if v is None else str(v) for v in c)):
        group = sorted(by[cond], key=lambda tr: (tr["spec"].get("trial", 0), tr["id"]))
        steps = sorted({int(p["step"]) for tr in group for p in tr["checkpoints"]})
        at = [{int(p["step"]): p for p in tr["checkpoints"]} for tr in group]
        metrics = {}
        for name in names:
            cols = [band([metric_value(a[s], name) if s in a else None for a in at], level, bounds_of(name))
                    for s in steps]
            metrics[name] = {k: [c[k] for c in cols] for k in ("mean", "lo", "hi", "n")}
        per_trial = [first_below(tr["checkpoints"], threshold) for tr in group]
        fell = [n for n in per_trial if n is not None]
        acc = metrics["global_acc"]
        out.append({
            **dict(zip(keys, cond)),
            "n_trials": len(group), "trial_ids": [tr["id"] for tr in group],
            "n_errors": sum(tr.get("status") == "error" for tr in group),
            "steps": steps, "metrics": metrics,
            "below": {
                "threshold": threshold, "metric": "global_acc",
                "per_trial": per_trial, "n_never": len(per_trial) - len(fell),
                "trials_mean": band(fell, level),
                "mean_curve": _crossing(steps, acc["mean"], threshold),
                # the band's crossings: the earliest (lower bound) and latest (upper bound) plausible N
                "band_earliest": _crossing(steps, acc["lo"], threshold),
                "band_latest": _crossing(steps, acc["hi"], threshold),
            },
        })
    return out


def plot_curves(curves: list[dict], path, metric: str = "global_acc", facet: Sequence[str] = ("method",),
                line: str = "order", threshold: float | None = THRESHOLD, title: str | None = None) -> str:
    """Accuracy vs number of deletions, mean line with its 95% band, one line per `line` value, one panel per
    `facet` combination; saved as PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple, list[dict]] = {}
    for c in curves:
        panels.setdefault(tuple(c.get(k) for k in facet), []).append(c)
    keys = sorted(panels, key=lambda p: tuple(str(v) for v in p))
    n = max(1, len(keys))
    ncol = min(3, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.4 * nrow), squeeze=False, sharey=True)
    for ax, key in zip(axes.flat, keys):
        for c in sorted(panels[key], key=lambda c: str(c.get(line))):
            m = c["metrics"][metric]
            x = np.asarray(c["steps"], dtype=float)
            y = np.asarray([np.nan if v is None else v for v in m["mean"]], dtype=float)
            (ln,) = ax.plot(x, y, label=f"{c.get(line)} (k={c['n_trials']})", lw=1.6)
            lo = np.asarray([np.nan if v is None else v for v in m["lo"]], dtype=float)
            hi = np.asarray([np.nan if v is None else v for v in m["hi"]], dtype=float)
            if np.isfinite(lo).any():
                ax.fill_between(x, lo, hi, color=ln.get_color(), alpha=0.2, lw=0)
        if threshold is not None:
            ax.axhline(threshold, color="grey", lw=0.8, ls="--")
        ax.set_title(", ".join(f"{k}={v}" for k, v in zip(facet, key)), fontsize=9)
        ax.set_xlabel("number of deletions")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("retained accuracy" if metric == "global_acc" else metric)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
