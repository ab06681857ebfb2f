"""Planted case dicts for the sweep's aggregation tests (no model): same-subject damage = slope × subject degree
+ noise, subjects shared by several facts (hubs carry more facts), and Hase-style success depending on layer."""

from __future__ import annotations

import hashlib

import numpy as np

GROUPS = ("target", "paraphrase", "same_subject", "same_object", "subject_as_object", "neighbors_1hop",
          "neighbors_2hop", "same_relation", "unrelated")


def _group(n: int, drop: float, pb: float = 0.8) -> dict:
    drop = float(min(max(drop, 0.0), pb))
    return {"n": n, "n_recalled_before": n, "acc_before": 1.0, "acc_after": 1.0, "acc_after_recalled": 1.0,
            "flip_rate": 0.0, "n_flipped": 0, "any_broke": False, "n_gained": 0,
            "mean_logp_before": float(np.log(pb)), "mean_logp_after": float(np.log(pb - drop + 1e-9)),
            "mean_p_before": pb, "mean_p_after": pb - drop, "mean_p_drop": drop, "hase_neighborhood": 1.0 - drop}


def planted_case(rng, fact_id: int, subject: int, degree: int, slope: float, seed: int, method: str = "rome",
                 layer: int = 0, site: str = "last", noise: float = 0.02, status: str = "ok",
                 success_by_layer: tuple = (0.9, 0.6, 0.3, 0.1), tracing: float | None = None) -> dict:
    cid = hashlib.sha256(f"{fact_id}-{method}-{layer}-{site}-{seed}".encode()).hexdigest()[:16]
    d = {"format": "kdel-case/1", "case_id": cid, "status": status,
         "spec": {"fact_ids": [fact_id], "method": method, "objective": "erase", "layer": layer, "site": site,
                  "hparams": {}, "seed": seed},
         "fact": {"id": fact_id, "subject": f"S{subject}", "target": f"O{fact_id}", "relation": f"r{fact_id % 4}",
                  "subject_degree": degree, "object_degree": int(rng.integers(1, 8)), "subject_bin": 0,
                  "object_bin": 0},
         "trace": {}, "timing": {}, "worker": {}}
    if status != "ok":
        d["error"] = "RuntimeError: planted failure"
        return d
    drop = slope * degree + float(rng.normal(0, noise))
    te = float(rng.uniform(0, 1)) if tracing is None else tracing
    score = float(np.clip(success_by_layer[layer % len(success_by_layer)] + rng.normal(0, 0.05), 0, 1))
    groups = {g: _group(3, drop if g == "same_subject" else drop / 4) for g in GROUPS}
    groups["target"] = _group(3, 0.7)
    d.update({"edit": {}, "success": True, "wrecked": False, "delta_norm": float(1 + rng.uniform(0, 1)),
              "efficacy": {"success": True, "target_recall_after": 0.0, "target_prompts_success_rate": 1.0,
                           "paraphrase_recall_after": 0.0, "paraphrase_success_rate": 1.0, "target_rank_after": 4},
              "groups": groups,
              "global": {"n": 100, "acc_before": 1.0, "acc_after": 1.0, "acc_drop": 0.0,
                         "flip_rate_excluding_target": 0.0, "mean_p_drop_excluding_target": drop / 5},
              "kl": {"n": 10, "mean": abs(drop) / 10, "max": abs(drop)},
              "hase": {"efficacy_score": score, "paraphrase_score": score, "neighborhood_score": 1.0,
                       "tracing_effect": te},
              "revert_verified": True})
    return d


def planted_cases(n_facts: int = 40, slope: float = 0.01, seed: int = 0, n_errors: int = 0, n_subjects: int = 15,
                  layers=(0,), method: str = "rome", site: str = "last", noise: float = 0.02) -> list[dict]:
    """`n_facts` facts over `n_subjects` subjects whose degree grows with how many facts they carry."""
    rng = np.random.default_rng(1000 + seed)
    weights = 1.0 / np.arange(1, n_subjects + 1)
    subj = rng.choice(n_subjects, size=n_facts, p=weights / weights.sum())
    degree = {s: int(np.sum(subj == s)) * 2 + int(rng.integers(1, 4)) for s in range(n_subjects)}
    out = [planted_case(rng, i, int(s), degree[int(s)], slope, seed, method=method, layer=layer, site=site,
                        noise=noise)
           for i, s in enumerate(subj) for layer in layers]
    for j in range(n_errors):
        out.append(planted_case(rng, n_facts + j, 0, degree[0], slope, seed, method=method, site=site, status="error"))
    return out


def test_planted_cases_carry_the_planted_slope():
    from scipy.stats import spearmanr

    cases = planted_cases(n_facts=60, slope=0.02, seed=3, n_errors=2)
    ok = [c for c in cases if c["status"] == "ok"]
    assert len(ok) == 60 and len(cases) == 62
    deg = [c["fact"]["subject_degree"] for c in ok]
    drop = [c["groups"]["same_subject"]["mean_p_drop"] for c in ok]
    assert spearmanr(deg, drop).statistic > 0.5
    assert len({c["fact"]["subject"] for c in ok}) < 30  # subjects are shared: clusters
    flat = planted_cases(n_facts=60, slope=0.0, seed=3)
    assert abs(spearmanr(deg, [c["groups"]["same_subject"]["mean_p_drop"] for c in flat]).statistic) < 0.35
