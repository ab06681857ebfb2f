"""Pooling a correlation across seeds: random-effects meta-analysis of Fisher-z ρ (DerSimonian–Laird).

Each seed is a replication (a new KG and a newly trained model), so seeds are "studies": the pooled ρ is
tanh of the inverse-variance weighted mean of z_i = atanh(ρ_i) with weights 1 / (v_i + τ²), where τ² is
DerSimonian and Laird's moment estimate of the between-seed variance. The CI uses the Hartung–Knapp–
Sidik–Jonkman variance (t with k − 1 df), never narrower than DerSimonian–Laird's own (the "modified"
HKSJ), because with 3–5 seeds the normal-theory interval is too narrow; the DL normal interval is kept in
`dl_lo` / `dl_hi` / `dl_p`. See docs/statistics.md for why this and not a hierarchical bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from kdel.stats.estimate import Z_CLIP, Estimate, normal_p


@dataclass
class Pooled:
    estimate: float | None  # pooled ρ
    lo: float | None = None  # HKSJ (modified) CI, on the ρ scale
    hi: float | None = None
    p: float | None = None  # t-test with k − 1 df in `direction`
    z: float | None = None  # pooled Fisher z and its (HKSJ, modified) SE
    se_z: float | None = None
    tau2: float | None = None  # between-seed variance of z (DerSimonian–Laird)
    i2: float | None = None  # share of the variation in z beyond sampling error, max(0, (Q − df) / Q)
    q: float | None = None  # Cochran's Q
    k: int = 0  # seeds pooled
    dl_lo: float | None = None  # DerSimonian–Laird with a normal CI (too narrow for few seeds)
    dl_hi: float | None = None
    dl_p: float | None = None
    n_facts: int = 0
    n_subjects: int = 0
    level: float = 0.95
    direction: str = "two-sided"
    per_seed: list[dict] = field(default_factory=list)  # {estimate, z, v, weight} (weight: share, random effects)
    dropped: list[str] = field(default_factory=list)  # why a seed was left out
    null_reason: str | None = None
    method: str = "DerSimonian-Laird random effects on Fisher z; modified Hartung-Knapp-Sidik-Jonkman CI"

    def to_dict(self) -> dict:
        return asdict(self)


def _variance(e: Estimate) -> float | None:
    """Sampling variance of atanh(ρ): the cluster-bootstrap SE² when there is one, else Fieller et al.'s
    1.06 / (n − 3) for Spearman's ρ."""
    if e.se is not None and e.se > 0:
        return float(e.se) ** 2
    if e.n_facts > 3:
        return 1.06 / (e.n_facts - 3)
    return None


def pool_seeds(per_seed: Sequence[Estimate | dict], level: float = 0.95, direction: str | None = None) -> Pooled:
    """Random-effects pooled ρ of one correlation measured in several seeds (Estimates or their dicts, e.g.
    kdel.audit.inference.rho_estimate(row) of each seed's summary row, or each seed's summary["primary"])."""
    ests = [e if isinstance(e, Estimate) else Estimate.from_dict(_as_estimate_dict(e)) for e in per_seed]
    direction = direction or (ests[0].direction if ests else "two-sided")
    out = Pooled(None, level=level, direction=direction)
    ys, vs, kept = [], [], []
    for i, e in enumerate(ests):
        v = _variance(e)
        if e.estimate is None or v is None:
            out.dropped.append(f"seed {i}: {e.null_reason or 'no variance'}")
            continue
        ys.append(_z(e.estimate))
        vs.append(v)
        kept.append(e)
    out.n_facts = sum(e.n_facts for e in kept)
    out.n_subjects = sum(e.n_subjects for e in kept)
    _random_effects(out, ys, vs, [e.estimate for e in kept], math.tanh)
    return out


def pool_differences(per_seed: Sequence[dict], level: float = 0.95, direction: str | None = None) -> Pooled:
    """Random-effects pooled difference of Fisher z, atanh(ρ_A) − atanh(ρ_B), from one
    kdel.audit.compare.compare_graphs result per seed (the BA–ER interaction across seeds). `estimate`,
    `lo`, `hi` are on the z-difference scale (no back-transform exists for a difference); the variance of a
    seed's difference is SE_A² + SE_B² from its two cluster bootstraps."""
    direction = direction or ((per_seed[0].get("spec") or {}).get("direction", "two-sided") if per_seed else
                              "two-sided")
    out = Pooled(None, level=level, direction=direction,
                 method="DerSimonian-Laird random effects on atanh(rho_A) - atanh(rho_B); modified HKSJ CI")
    ys, vs = [], []
    for i, comp in enumerate(per_seed):
        a, b = (Estimate.from_dict(comp.get(k) or {"kind": "spearman", "estimate": None}) for k in ("a", "b"))
        va, vb = _variance(a), _variance(b)
        if a.estimate is None or b.estimate is None or va is None or vb is None:
            out.dropped.append(f"seed {i}: {a.null_reason or b.null_reason or 'no variance'}")
            continue
        ys.append(_z(a.estimate) - _z(b.estimate))
        vs.append(va + vb)
        out.n_facts += a.n_facts + b.n_facts
        out.n_subjects += a.n_subjects + b.n_subjects
    _random_effects(out, ys, vs, list(ys), float)
    return out


def _z(r: float) -> float:
    return math.atanh(max(-Z_CLIP, min(Z_CLIP, r)))


def _as_estimate_dict(d: dict) -> dict:
    """A summary correlation row or primary dict (rho, ci_lo, ci_hi, se_z, ...) as Estimate fields."""
    if "rho" not in d:
        return d
    return {"kind": "spearman", "estimate": d["rho"], "lo": d.get("ci_lo"), "hi": d.get("ci_hi"), "p": d.get("p"),
            "n_facts": d.get("n_facts", 0), "n_subjects": d.get("n_subjects", 0), "se": d.get("se_z"),
            "p_iid": d.get("p_iid"), "direction": d.get("direction", "two-sided"), "null_reason": d.get("null_reason")}


def _random_effects(out: Pooled, ys: list[float], vs: list[float], shown: list, back) -> None:
    """Fill `out` with the DerSimonian–Laird pooled value of ys (variances vs), back-transformed by `back`."""
    from scipy import stats

    k = len(ys)
    out.k = k
    if k == 0:
        out.null_reason = "no seed has an estimate"
        return
    level, direction = out.level, out.direction
    z, v = np.asarray(ys), np.asarray(vs)
    w = 1.0 / v
    z_fixed = float((w * z).sum() / w.sum())
    q = float((w * (z - z_fixed) ** 2).sum())
    df = k - 1
    c = float(w.sum() - (w ** 2).sum() / w.sum())
    tau2 = max(0.0, (q - df) / c) if k > 1 and c > 0 else 0.0
    ws = 1.0 / (v + tau2)
    mu = float((ws * z).sum() / ws.sum())
    se_dl = math.sqrt(1.0 / ws.sum())
    zc = stats.norm.ppf(0.5 + level / 2.0)
    out.z, out.tau2, out.q = mu, tau2, q
    out.i2 = max(0.0, (q - df) / q) if k > 1 and q > 0 else 0.0
    out.estimate = back(mu)
    out.dl_lo, out.dl_hi = back(mu - zc * se_dl), back(mu + zc * se_dl)
    out.dl_p = normal_p(mu / se_dl, direction)
    out.per_seed = [{"estimate": e, "z": float(zi), "v": float(vi), "weight": float(wi / ws.sum())}
                    for e, zi, vi, wi in zip(shown, z, v, ws)]
    if k == 1:
        out.se_z, out.lo, out.hi, out.p = se_dl, out.dl_lo, out.dl_hi, out.dl_p
        out.null_reason = "one seed: nothing to pool (its own normal CI)"
        return
    se_hk = math.sqrt(float((ws * (z - mu) ** 2).sum()) / (df * ws.sum()))
    se = max(se_hk, se_dl)
    tc = stats.t.ppf(0.5 + level / 2.0, df)
    out.se_z = se
    out.lo, out.hi = back(mu - tc * se), back(mu + tc * se)
    t = mu / se
    if direction == "greater":
        out.p = float(stats.t.sf(t, df))
    elif direction == "less":
        out.p = float(stats.t.cdf(t, df))
    else:
        out.p = float(2.0 * stats.t.sf(abs(t), df))
