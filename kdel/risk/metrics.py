"""Metrics of risk predictions: AUROC, AUPRC, Brier score, reliability (calibration) curves, and AUROC
differences with cluster-bootstrap CIs (subjects resampled with replacement: the unit of inference is the
deleted fact, clusters are subjects; DESIGN §13)."""

from __future__ import annotations

import numpy as np


def _two_classes(y) -> bool:
    return len(set(np.asarray(y).astype(bool).tolist())) == 2


def auroc(y, score, w=None) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(y, bool), score, sample_weight=w)) if _two_classes(y) else None


def auprc(y, score, w=None) -> float | None:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(np.asarray(y, bool), score, sample_weight=w)) if _two_classes(y) else None


def reliability(y, p, w=None, bins: int = 10) -> list[dict]:
    """Per bin of predicted probability (equal width): mean prediction, observed rate, weight."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    w = np.ones(len(y)) if w is None else np.asarray(w, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        if w[m].sum() > 0:
            out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "mean_predicted": float(np.average(p[m], weights=w[m])),
                        "observed": float(np.average(y[m], weights=w[m])), "weight": float(w[m].sum())})
    return out


def binary_metrics(y, p, w=None) -> dict:
    y = np.asarray(y, bool)
    w = np.ones(len(y)) if w is None else np.asarray(w, float)
    return {"n": int(len(y)), "positives": float(w[y].sum()), "base_rate": float(np.average(y, weights=w)) if len(y) else None,
            "auroc": auroc(y, p, w), "auprc": auprc(y, p, w),
            "brier": float(np.average((np.asarray(p) - y) ** 2, weights=w)) if len(y) else None,
            "reliability": reliability(y, p, w)}


def regression_metrics(y, pred, w=None) -> dict:
    from scipy.stats import spearmanr

    y = np.asarray(y, float)
    pred = np.asarray(pred, float)
    w = np.ones(len(y)) if w is None else np.asarray(w, float)
    ss_res = float(np.average((y - pred) ** 2, weights=w))
    ss_tot = float(np.average((y - np.average(y, weights=w)) ** 2, weights=w))
    rho = spearmanr(y, pred).statistic if len(y) > 2 and np.ptp(y) > 0 and np.ptp(pred) > 0 else None
    return {"n": int(len(y)), "r2": 1 - ss_res / ss_tot if ss_tot > 0 else None,
            "mae": float(np.average(np.abs(y - pred), weights=w)),
            "spearman": None if rho is None or not np.isfinite(rho) else float(rho)}


def cluster_counts(clusters, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(index of each observation's cluster, (n_boot, K) counts): replicate b draws K of the K clusters with
    replacement; an observation's weight in b is its cluster's count."""
    labels = sorted({str(c) for c in clusters})
    pos = {c: i for i, c in enumerate(labels)}
    idx = np.array([pos[str(c)] for c in clusters], dtype=np.int64)
    rng = np.random.default_rng(seed)
    k = len(labels)
    counts = np.stack([np.bincount(rng.integers(0, k, k), minlength=k) for _ in range(n_boot)]).astype(float)
    return idx, counts


class _Ranked:
    """A score's distinct values, for weighted AUROCs in O(n) per replicate (ties count one half)."""

    def __init__(self, y: np.ndarray, score: np.ndarray):
        self.uniq, self.inv = np.unique(np.asarray(score, dtype=float), return_inverse=True)
        self.y = y

    def auroc(self, w: np.ndarray) -> float:
        m = len(self.uniq)
        pos = np.bincount(self.inv, weights=w * self.y, minlength=m)
        neg = np.bincount(self.inv, weights=w * ~self.y, minlength=m)
        tp, tn = pos.sum(), neg.sum()
        if tp <= 0 or tn <= 0:
            return float("nan")
        below = np.cumsum(neg) - neg
        return float((pos * (below + 0.5 * neg)).sum() / (tp * tn))


def auroc_with_ci(y, scores: dict[str, np.ndarray], clusters, n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95, reference: str | None = None) -> dict:
    """AUROC of each score with a cluster-bootstrap percentile CI, and (with `reference`) the paired difference
    reference − score with its CI and a one-sided bootstrap p for "reference is not better" (the share of
    replicates with a difference ≤ 0, as (1 + count) / (1 + replicates)), from the same replicates."""
    y = np.asarray(y, bool)
    idx, counts = cluster_counts(clusters, n_boot, seed)
    ranked = {name: _Ranked(y, s) for name, s in scores.items()}
    boot = {name: np.empty(n_boot) for name in scores}
    for b in range(n_boot):
        w = counts[b][idx]
        for name, r in ranked.items():
            boot[name][b] = r.auroc(w)
    lo_q, hi_q = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out: dict = {}
    for name, r in ranked.items():
        est = r.auroc(np.ones(len(y)))
        out[name] = {"auroc": None if not np.isfinite(est) else est, "ci": _pct(boot[name], lo_q, hi_q)}
    if reference is not None:
        for name in scores:
            if name == reference:
                continue
            diff = boot[reference] - boot[name]
            a, b = out[reference]["auroc"], out[name]["auroc"]
            finite = diff[np.isfinite(diff)]
            out[name]["difference"] = {"estimate": None if a is None or b is None else a - b,
                                       "ci": _pct(diff, lo_q, hi_q),
                                       "p_one_sided": float((1 + (finite <= 0).sum()) / (1 + len(finite)))
                                       if len(finite) else None}
    out["_n_boot"] = n_boot
    out["_n_clusters"] = int(counts.shape[1])
    return out


def _pct(arr: np.ndarray, lo: float, hi: float) -> list[float] | None:
    arr = arr[np.isfinite(arr)]
    if len(arr) == 0:
        return None
    return [float(np.percentile(arr, lo)), float(np.percentile(arr, hi))]
