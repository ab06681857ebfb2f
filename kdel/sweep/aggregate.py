"""Across seeds: per-seed estimates of each analysis and their pooled estimate, with the family's corrections.

The statistics are the audit's (kdel.audit.inference / primary / compare, kdel.stats); this module only
applies them cell by cell and pools:
- correlations (ρ of a side effect with degree, one value per deleted fact, subjects as clusters): pooled by
  `kdel.stats.meta.pool_seeds`, a random-effects meta-analysis of Fisher-z ρ (DerSimonian–Laird τ², I²,
  modified Hartung–Knapp CI with k − 1 df). Seeds are replications with their own KG and model, so the
  between-seed variance is real and a random-effects model is the honest choice; a hierarchical bootstrap
  over seeds then subjects was not chosen because with 3–5 seeds its percentile intervals are unstable.
- graph contrasts (ρ_A − ρ_B): per seed from `compare_graphs`, pooled on the Fisher scale: d = atanh ρ_A −
  atanh ρ_B with the seed's cluster-bootstrap variance, through the same random-effects pooling
  (`pool_contrast`).
- Hase et al.'s R²s: per seed with cluster-bootstrap CIs; across seeds the mean with a t interval over seeds
  (k − 1 df): an R² is not a correlation to pool on Fisher's scale, and seeds are the replications.
The exploratory family (every pooled popularity row) gets Holm p and BH q; the primary hypothesis is apart.
"""

from __future__ import annotations

import math
from collections import defaultdict

FIT_KEYS = ("r2_layer", "r2_tracing", "r2_layer_x_tracing", "delta_r2_tracing_over_layer")


def _split(cases: list[dict]):
    from kdel.audit.metrics import case_metrics

    ok = [c for c in cases if c["status"] == "ok"]
    errors = [c for c in cases if c["status"] != "ok"]
    return ok, errors, [case_metrics(c) for c in ok]


def metric_names(metrics) -> list[str]:
    """The metrics a FactTable needs for `metrics`: themselves, their group sizes and ‖ΔW‖ (the controls)."""
    from kdel.audit.metrics import size_metric

    names = set(metrics) | {"delta_norm"}
    names |= {size_metric(m) for m in metrics if size_metric(m)}
    return sorted(names)


def pool_correlations(per_seed_rows: dict[int, dict], level: float, direction: str = "two-sided") -> dict:
    """The random-effects pooled ρ of one correlation row measured in several seeds."""
    from kdel.audit.inference import rho_estimate
    from kdel.stats.meta import pool_seeds

    ests = [rho_estimate(per_seed_rows[s]) for s in sorted(per_seed_rows)]
    pooled = pool_seeds(ests, level=level, direction=direction).to_dict()
    pooled["seeds"] = sorted(per_seed_rows)
    return pooled


def pool_contrast(per_seed: list[dict], level: float, direction: str) -> dict:
    """Pool per-seed graph contrasts (`compare_graphs` results, or their `matched` parts) over seeds.

    Each seed's contrast on the Fisher scale is d = atanh ρ_A − atanh ρ_B with variance SE_A² + SE_B² (the two
    graphs' cluster-bootstrap SEs, as in `kdel.stats.estimate.difference`); the seeds' d are pooled by the same
    random-effects model as correlations (`pool_seeds`, fed tanh(d) so that its atanh returns d). Reported on
    the Fisher scale: `d` (pooled), `d_lo`/`d_hi`, p, τ², I², k."""
    from kdel.stats.estimate import Estimate
    from kdel.stats.meta import pool_seeds

    ests, seeds, dropped = [], [], []
    for r in per_seed:
        a, b, diff = r.get("a") or {}, r.get("b") or {}, r.get("difference") or {}
        if a.get("estimate") is None or b.get("estimate") is None or diff.get("se") is None:
            dropped.append(f"seed {r.get('seed')}: {diff.get('null_reason') or 'no contrast'}")
            continue
        d = _z(a["estimate"]) - _z(b["estimate"])
        if abs(d) >= 4.9:  # outside what tanh/atanh round-trips (|ρ| ≈ 1 in both graphs, opposite signs)
            dropped.append(f"seed {r.get('seed')}: |d| too large to pool")
            continue
        ests.append(Estimate("difference_of_fisher_z", math.tanh(d), n_facts=diff.get("n_facts", 0),
                             n_subjects=diff.get("n_subjects", 0), se=diff["se"], direction=direction))
        seeds.append(r.get("seed"))
    p = pool_seeds(ests, level=level, direction=direction).to_dict()
    lo, hi = _interval(p["z"], p["se_z"], p["k"], level)
    out = {"d": p["z"], "d_lo": lo, "d_hi": hi, "p": p["p"], "se": p["se_z"], "tau2": p["tau2"],
           "i2": p["i2"], "q": p["q"], "k": p["k"], "dl_p": p["dl_p"], "seeds": seeds,
           "dropped": p["dropped"] + dropped, "null_reason": p["null_reason"], "direction": direction, "level": level,
           "scale": "Fisher z: atanh(rho_A) - atanh(rho_B)",
           "method": p["method"], "n_facts": p["n_facts"], "n_subjects": p["n_subjects"]}
    return out


def _interval(z, se, k: int, level: float) -> tuple[float | None, float | None]:
    """pool_seeds' interval on the Fisher scale itself (its ρ-scale bounds saturate for a difference):
    t with k − 1 df for k ≥ 2 seeds, normal for one."""
    from scipy import stats

    if z is None or se is None:
        return None, None
    q = stats.t.ppf(0.5 + level / 2.0, k - 1) if k >= 2 else stats.norm.ppf(0.5 + level / 2.0)
    return z - q * se, z + q * se


def _z(r):
    if r is None:
        return None
    return math.atanh(max(-0.9999, min(0.9999, float(r))))


def popularity_rows(condition: str, cases_by_seed: dict[int, list[dict]], spec, n_boot: int, level: float) -> list[dict]:
    """Per (method, site, layer level, outcome, metric, predictor): the per-seed correlation rows and the pooled ρ."""
    from kdel.audit.inference import correlation_row, layer_levels, stratum

    names = metric_names(spec.metrics)
    per: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for seed, cases in sorted(cases_by_seed.items()):
        ok, errors, metrics = _split(cases)
        for method, site in sorted({(c["spec"]["method"], c["spec"]["site"]) for c in ok}):
            for layer in layer_levels(ok, method, site):
                for outcome in spec.outcomes:
                    t = stratum(ok, metrics, errors, method, site, layer, outcome, names)
                    if not t.facts:
                        continue
                    for vs in spec.vs:
                        for metric in spec.metrics:
                            per[(method, site, layer, outcome, metric, vs)][seed] = correlation_row(
                                t, metric, vs, seed=seed, n_boot=n_boot, level=level)
    rows = []
    for (method, site, layer, outcome, metric, vs), by_seed in per.items():
        rows.append({"condition": condition, "method": method, "site": site, "layer": layer, "outcome": outcome,
                     "metric": metric, "vs": vs,
                     "per_seed": [{"seed": s, **by_seed[s]} for s in sorted(by_seed)],
                     "pooled": pool_correlations(by_seed, level)})
    return rows


def adjust(rows: list[dict], p_of=lambda r: r["pooled"]["p"]) -> None:
    """Holm p and BH q over the family `rows` (rows without a p stay outside, with None)."""
    from kdel.stats.multiple import benjamini_hochberg, holm

    ps = [p_of(r) for r in rows]
    for r, h, q in zip(rows, holm(ps), benjamini_hochberg(ps)):
        r["p_holm"], r["q_bh"] = h, q


def mean_over_seeds(values: list[float | None], level: float) -> dict:
    """Mean of a per-seed quantity with a t interval over the seeds (k − 1 df); seeds are the replications."""
    from scipy import stats

    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    k = len(v)
    out = {"mean": None, "lo": None, "hi": None, "sd": None, "k": k, "null_reason": None}
    if k == 0:
        out["null_reason"] = "no seed has a value"
        return out
    m = sum(v) / k
    out["mean"] = m
    if k == 1:
        out["null_reason"] = "one seed: no interval over seeds"
        return out
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (k - 1))
    half = float(stats.t.ppf(0.5 + level / 2.0, k - 1)) * sd / math.sqrt(k)
    out.update(sd=sd, lo=m - half, hi=m + half)
    return out


def hase_rows(condition: str, cases_by_seed: dict[int, list[dict]], ys, n_boot: int, level: float) -> list[dict]:
    """Hase et al.'s regressions of edit success on layer and tracing effect per seed, and their mean over seeds."""
    from kdel.audit.metrics import subject_key
    from kdel.audit.stats import hase_regressions
    from kdel.stats.robust import fisher_combined_p

    per: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for seed, cases in sorted(cases_by_seed.items()):
        ok, _, metrics = _split(cases)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, c in enumerate(ok):
            groups[(c["spec"]["method"], c["spec"]["site"], c["spec"]["objective"])].append(i)
        for (method, site, objective), idx in sorted(groups.items()):
            layers = [ok[i]["spec"]["layer"] for i in idx]
            te = [metrics[i].get("hase.tracing_effect") for i in idx]
            clusters = [subject_key(ok[i]) for i in idx]
            for y_name in ys:
                y = [metrics[i].get(y_name) for i in idx]
                per[(method, site, objective, y_name)][seed] = hase_regressions(
                    y, layers, te, clusters=clusters, n_boot=n_boot, seed=seed, level=level)
    rows = []
    for (method, site, objective, y_name), by_seed in per.items():
        pooled = {k: mean_over_seeds([by_seed[s].get(k) for s in sorted(by_seed)], level) for k in FIT_KEYS}
        f_ps = [by_seed[s]["f_test"].get("p") for s in sorted(by_seed)]
        pooled["f_test_significant_seeds"] = sum(1 for p in f_ps if p is not None and p < 1.0 - level)
        pooled["f_test_seeds"] = sum(1 for p in f_ps if p is not None)
        # the test reported: tracing's terms by a cluster-robust Wald test per seed, combined over seeds (Fisher)
        c_ps = [(by_seed[s].get("f_test_cluster") or {}).get("p") for s in sorted(by_seed)]
        pooled["cluster_test_seeds"] = sum(1 for p in c_ps if p is not None)
        pooled["cluster_test_significant_seeds"] = sum(1 for p in c_ps if p is not None and p < 1.0 - level)
        # a finding needs replication: no combined p from a single seed's test
        pooled["p"] = fisher_combined_p(c_ps) if pooled["cluster_test_seeds"] >= 2 else None
        rows.append({"condition": condition, "method": method, "site": site, "objective": objective, "y": y_name,
                     "per_seed": [{"seed": s, **by_seed[s]} for s in sorted(by_seed)], "pooled": pooled})
    return rows
