"""Estimates with cluster-bootstrap CIs over subjects, the n of facts and of subjects, and a null reason.

Every function takes one value per deleted fact (the unit of analysis) and the fact's cluster (its subject):
a hub contributes many facts, which are not independent, so replicates resample subjects, not facts.
Correlations are tested on Fisher's z scale: p = the normal tail of atanh(ρ) / SE, with SE the standard
deviation of atanh(ρ*) over the replicates (a Wald test whose standard error respects the clustering).
`p_iid` is the textbook p that treats facts as independent (scipy), kept for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from kdel.stats.bootstrap import (Residualizer, cluster_index, cluster_weights, percentile_ci, weighted_corr,
                                  weighted_mean, weighted_ranks, weighted_spearman)

DIRECTIONS = ("greater", "less", "two-sided")
MIN_FACTS = 3  # below: no estimate
MIN_SUBJECTS = 5  # below: an estimate, but no cluster-bootstrap CI or p
Z_CLIP = 0.9999  # |ρ| is clipped here before atanh (ρ* = ±1 in small replicates)


@dataclass
class Estimate:
    """One number with its CI and test. `estimate` is None (with `null_reason`) when it cannot be computed;
    `lo`/`hi`/`p` are None (with `null_reason`) when only the bootstrap is impossible."""

    kind: str  # spearman | partial_spearman | mean | difference | difference_of_spearman
    estimate: float | None
    lo: float | None = None
    hi: float | None = None
    p: float | None = None  # cluster-robust test of estimate = 0 in `direction`
    n_facts: int = 0
    n_subjects: int = 0
    level: float = 0.95
    se: float | None = None  # bootstrap SE on the test scale (Fisher z for correlations)
    p_iid: float | None = None  # facts treated as independent (for comparison only)
    direction: str = "two-sided"
    n_boot: int = 0  # replicates with a finite statistic
    null_reason: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Estimate":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _clean(*cols) -> tuple[list[np.ndarray], np.ndarray]:
    arrs = [np.asarray([np.nan if v is None else v for v in c], dtype=np.float64) for c in cols]
    ok = np.ones(len(arrs[0]), dtype=bool)
    for a in arrs:
        ok &= np.isfinite(a)
    return [a[ok] for a in arrs], ok


def normal_p(z: float, direction: str) -> float:
    """p of a standard-normal statistic z for the alternative `direction`."""
    from scipy.special import ndtr

    if direction == "greater":
        return float(ndtr(-z))
    if direction == "less":
        return float(ndtr(z))
    return float(2.0 * ndtr(-abs(z)))


def _fisher(r):
    return np.arctanh(np.clip(r, -Z_CLIP, Z_CLIP))


def _n_subjects(clusters) -> int:
    return len({str(c) for c in clusters})


class Correlator:
    """Spearman and partial Spearman ρ of many outcomes against one predictor over the same facts.

    Replicate weights, the predictor's ranks and the controls' least-squares projections are computed once
    per set of facts with a value (and per set of controls) and shared by every outcome, which keeps a
    summary's hundreds of correlations fast. Each result equals `spearman_estimate` on the same data."""

    def __init__(self, x: Sequence, clusters: Sequence, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
        self.x = np.asarray([np.nan if v is None else v for v in x], dtype=np.float64)
        self.clusters = [str(c) for c in clusters]
        self.n_boot, self.seed, self.level = n_boot, seed, level
        self._boot: dict = {}
        self._collinear: dict = {}

    def _prep(self, ok: np.ndarray) -> dict:
        key = ok.tobytes()
        if key not in self._boot:
            idx = np.flatnonzero(ok)
            cl = [self.clusters[i] for i in idx]
            W = cluster_weights(cl, self.n_boot, self.seed) if _n_subjects(cl) >= MIN_SUBJECTS else None
            self._boot[key] = {"idx": idx, "cl": cl, "W": W, "rx": None if W is None else weighted_ranks(self.x[idx], W),
                               "res": {}}
        return self._boot[key]

    def collinearity(self, y: Sequence, name: str, values: Sequence) -> float | None:
        """Spearman ρ of the predictor with a control over the facts where y has a value (cached per set of
        facts and control name)."""
        from kdel.stats.correlation import spearman

        ok = np.isfinite(self.x) & np.isfinite(np.asarray(y, dtype=np.float64))
        key = (ok.tobytes(), name)
        if key not in self._collinear:
            v = np.asarray(values, dtype=np.float64)
            self._collinear[key] = spearman(self.x[ok], v[ok])["rho"]
        return self._collinear[key]

    def estimate(self, y: Sequence, covariates: dict[str, Sequence] | None = None,
                 direction: str = "two-sided") -> Estimate:
        """ρ of y with the predictor (partial ρ given `covariates` {name: values} when given): estimate, cluster-
        bootstrap CI and Wald p on Fisher z, iid p, n of facts and subjects. Constant covariates are dropped."""
        from kdel.stats.correlation import partial_spearman, spearman

        y = np.asarray([np.nan if v is None else v for v in y], dtype=np.float64)
        covs = {k: np.asarray([np.nan if v is None else v for v in c], dtype=np.float64)
                for k, c in (covariates or {}).items()}
        ok = np.isfinite(self.x) & np.isfinite(y)
        for c in covs.values():
            ok &= np.isfinite(c)
        idx = np.flatnonzero(ok)
        x, yy = self.x[idx], y[idx]
        kept = {k: c[idx] for k, c in covs.items() if len(idx) and not np.all(c[idx] == c[idx][0])}
        cl = [self.clusters[i] for i in idx]
        est = Estimate("partial_spearman" if covariates else "spearman", None, n_facts=len(idx),
                       n_subjects=_n_subjects(cl), level=self.level, direction=direction)
        if len(x) < MIN_FACTS + len(kept):
            est.null_reason = f"fewer than {MIN_FACTS + len(kept)} facts with a value"
            return est
        if np.all(x == x[0]):
            est.null_reason = "the predictor is constant"
            return est
        if np.all(yy == yy[0]):
            est.null_reason = "the outcome is constant"
            return est
        if covariates:
            ps = partial_spearman(x, yy, list(kept.values()))
            if ps["rho"] is None:
                est.null_reason = "no residual variance after the controls (df < 1 or collinear)"
                return est
            est.estimate, est.p_iid = ps["rho"], ps["p"]
        else:
            res = spearman(x, yy)
            est.estimate, est.p_iid = res["rho"], res["p"]
        if est.p_iid is not None and direction != "two-sided":  # one-sided iid p from the two-sided one
            half = est.p_iid / 2.0
            est.p_iid = half if (est.estimate > 0) == (direction == "greater") else 1.0 - half
        if est.n_subjects < MIN_SUBJECTS:
            est.null_reason = f"fewer than {MIN_SUBJECTS} subjects: no cluster-bootstrap CI or p"
            return est
        b = self._prep(ok)
        W, rx = b["W"], b["rx"]
        ry = weighted_ranks(yy, W)
        if kept:
            ck = tuple(sorted(kept))
            if ck not in b["res"]:
                r = Residualizer(W, [kept[k] for k in ck])
                b["res"][ck] = (r, r(rx))
            r, ex = b["res"][ck]
            reps = weighted_corr(W, ex, r(ry))
        else:
            reps = weighted_corr(W, rx, ry)
        _fill_from_reps(est, reps, self.level, fisher=True)
        return est


def spearman_estimate(x: Sequence, y: Sequence, clusters: Sequence, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95, direction: str = "two-sided", covariates: Sequence[Sequence] = ()) -> Estimate:
    """Spearman ρ of y with x (partial, given `covariates`, when any are given) over facts, CI and p by a
    cluster bootstrap over `clusters`. Constant covariates are dropped."""
    covs = {f"c{i}": c for i, c in enumerate(covariates)} or None
    return Correlator(x, clusters, n_boot, seed, level).estimate(y, covs, direction)


def _fill_from_reps(est: Estimate, reps: np.ndarray, level: float, fisher: bool) -> None:
    finite = reps[np.isfinite(reps)]
    est.n_boot = int(len(finite))
    est.lo, est.hi = percentile_ci(reps, level)
    if est.lo is None:
        est.null_reason = "too few bootstrap replicates with a defined value"
        return
    t = _fisher(finite) if fisher else finite
    se = float(np.std(t, ddof=1)) if len(t) > 1 else 0.0
    est.se = se
    centre = float(_fisher(est.estimate)) if fisher else float(est.estimate)
    if se > 0 and math.isfinite(se):
        est.p = normal_p(centre / se, est.direction)
    elif centre != 0:
        est.p = 0.0 if est.direction == "two-sided" or (centre > 0) == (est.direction == "greater") else 1.0


def mean_estimate(y: Sequence, clusters: Sequence, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Estimate:
    """Mean of y over facts with a cluster-bootstrap CI (no test)."""
    (y,), ok = _clean(y)
    cl = [c for c, k in zip(clusters, ok) if k]
    est = Estimate("mean", None, n_facts=len(y), n_subjects=_n_subjects(cl), level=level)
    if len(y) == 0:
        est.null_reason = "no fact with a value"
        return est
    est.estimate = float(y.mean())
    if np.all(y == y[0]):
        est.lo = est.hi = est.estimate
        return est
    if est.n_subjects < 2:
        est.null_reason = "one subject: no cluster-bootstrap CI"
        return est
    W = cluster_weights(cl, n_boot, seed)
    reps = weighted_mean(W, y)
    est.n_boot = int(np.isfinite(reps).sum())
    est.lo, est.hi = percentile_ci(reps, level)
    return est


def hubs_minus_rest(x: Sequence, y: Sequence, clusters: Sequence, top: float = 0.1, n_boot: int = 1000,
                    seed: int = 0, level: float = 0.95) -> tuple[Estimate, dict]:
    """Mean of y over hubs (facts whose x is in the top `top` fraction: x ≥ the (1 − top) quantile) minus its
    mean over the rest, in y's own units, with a cluster-bootstrap CI and a two-sided Wald p.

    Returns (estimate, {"threshold", "n_hubs", "n_rest", "hub_subjects"}). Replicates that draw no hub (or no
    other) subject are left out of the CI (hubs are few subjects, so this happens)."""
    (x, y), ok = _clean(x, y)
    cl = [c for c, k in zip(clusters, ok) if k]
    est = Estimate("difference", None, n_facts=len(x), n_subjects=_n_subjects(cl), level=level)
    info = {"threshold": None, "n_hubs": 0, "n_rest": 0, "hub_subjects": 0}
    if len(x) < 2:
        est.null_reason = "fewer than 2 facts with a value"
        return est, info
    thr = float(np.quantile(x, 1.0 - top))
    hub = x >= thr
    info.update(threshold=thr, n_hubs=int(hub.sum()), n_rest=int((~hub).sum()),
                hub_subjects=_n_subjects([c for c, h in zip(cl, hub) if h]))
    if hub.all() or not hub.any():
        est.null_reason = "no spread in the predictor: every fact is a hub"
        return est, info
    est.estimate = float(y[hub].mean() - y[~hub].mean())
    if est.n_subjects < MIN_SUBJECTS:
        est.null_reason = f"fewer than {MIN_SUBJECTS} subjects: no cluster-bootstrap CI or p"
        return est, info
    W = cluster_weights(cl, n_boot, seed)
    reps = weighted_mean(W[:, hub], y[hub]) - weighted_mean(W[:, ~hub], y[~hub])
    _fill_from_reps(est, reps, level, fisher=False)
    return est, info


def difference(a: Estimate, b: Estimate, reps_a: np.ndarray, reps_b: np.ndarray, direction: str,
               level: float = 0.95) -> Estimate:
    """ρ_a − ρ_b from two independent cluster bootstraps (one per graph): percentile CI of the replicate
    differences; p from z = (atanh ρ_a − atanh ρ_b) / sqrt(SE_a² + SE_b²)."""
    est = Estimate("difference_of_spearman", None, n_facts=a.n_facts + b.n_facts,
                   n_subjects=a.n_subjects + b.n_subjects, level=level, direction=direction)
    if a.estimate is None or b.estimate is None:
        est.null_reason = "a correlation is undefined: " + (a.null_reason or b.null_reason or "?")
        return est
    est.estimate = float(a.estimate - b.estimate)
    if a.se is None or b.se is None:
        est.null_reason = "no bootstrap for one of the graphs: " + (a.null_reason or b.null_reason or "?")
        return est
    d = reps_a - reps_b
    est.n_boot = int(np.isfinite(d).sum())
    est.lo, est.hi = percentile_ci(d, level)
    se = math.sqrt(a.se ** 2 + b.se ** 2)
    est.se = se
    if se > 0:
        est.p = normal_p(float(_fisher(a.estimate) - _fisher(b.estimate)) / se, direction)
    return est


def spearman_replicates(x, y, clusters, n_boot: int, seed: int) -> np.ndarray:
    """The cluster-bootstrap replicates of Spearman ρ behind `spearman_estimate` (same seed → same draws)."""
    (x, y), ok = _clean(x, y)
    cl = [c for c, k in zip(clusters, ok) if k]
    if len(x) < MIN_FACTS or _n_subjects(cl) < MIN_SUBJECTS:
        return np.full(n_boot, np.nan)
    return weighted_spearman(cluster_weights(cl, n_boot, seed), x, y)


__all__ = ["DIRECTIONS", "Estimate", "cluster_index", "difference", "hubs_minus_rest", "mean_estimate", "normal_p",
           "spearman_estimate", "spearman_replicates"]
