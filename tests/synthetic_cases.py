"""Synthetic kdel-case/1 documents for tests of the report and the statistics (no model needed).

`synthetic_cases` plants a degree-dependent side effect (damage grows with the subject's degree when
`degree_effect` > 0) so plots and statistics have something to show; `planted_cases` gives exact control of
subjects, their degrees and the same-subject damage (for the inference tests). Hubs contribute several
facts, as in a real KG. Every document passes `kdel.audit.schema.validate_case`.
"""

from __future__ import annotations

import hashlib

import numpy as np

from kdel.audit.schema import CASE_FORMAT

PROBE_GROUPS = ("target", "paraphrase", "same_subject", "same_object", "subject_as_object", "neighbors_1hop",
                "neighbors_2hop", "same_relation", "unrelated")


def _group(rng, n: int, drop: float) -> dict:
    k = n
    flipped = int(rng.binomial(k, min(max(drop, 0.0), 1.0))) if k else 0
    pb = float(rng.uniform(0.6, 0.95)) if k else None
    pa = max(0.0, pb - drop) if k else None
    return {
        "n": n, "n_recalled_before": k, "acc_before": 1.0 if n else None,
        "acc_after": (k - flipped) / n if n else None,
        "acc_after_recalled": (k - flipped) / k if k else None,
        "flip_rate": flipped / k if k else None, "n_flipped": flipped,
        "any_broke": bool(flipped) if k else None, "n_gained": 0,
        "mean_logp_before": float(np.log(pb)) if k else None,
        "mean_logp_after": float(np.log(max(pa, 1e-9))) if k else None,
        "mean_p_before": pb, "mean_p_after": pa, "mean_p_drop": (pb - pa) if k else None,
        "hase_neighborhood": (1.0 - drop) if n else None,
    }


def synthetic_case(rng, fact_id: int, method: str, layer: int, degree: int, n_bins: int, subject_bin: int,
                   degree_effect: float = 0.02, site: str = "subject_last", seed: int = 0,
                   status: str = "ok", subject: str | None = None) -> dict:
    """One kdel-case/1 dict with plausible numbers; side effects grow with `degree` * `degree_effect`."""
    cid = hashlib.sha256(f"{fact_id}-{method}-{layer}-{site}-{seed}".encode()).hexdigest()[:16]
    doc = {
        "format": CASE_FORMAT, "kdel_version": "synthetic", "case_id": cid,
        "spec": {"fact_ids": [fact_id], "method": method, "objective": "erase", "layer": layer, "site": site,
                 "hparams": {}, "seed": seed, "new_targets": None, "layer_source": "list"},
        "fact": {"id": fact_id, "subject": subject or f"Subject {fact_id}", "target": f"Object {fact_id}",
                 "relation": f"relation_{fact_id % 5}", "prompt": f"{subject or f'Subject {fact_id}'} works with",
                 "subject_degree": degree, "object_degree": int(rng.integers(1, 12)),
                 "subject_bin": subject_bin, "object_bin": int(rng.integers(0, n_bins)), "n_bins": n_bins,
                 "stratify": "subject"},
        "trace": {"peak_layers": {"subject_last": layer, "last": layer}, "tracing_effect": None,
                  "tracing_window": 5, "layer_source": "list"},
        "timing": {"total_s": 0.1, "edit_s": 0.05, "eval_s": 0.02},
        "worker": {"index": 0, "pid": 0, "host": "synthetic", "backend": "local"},
        "status": status,
    }
    if status == "error":
        doc["error"] = "RuntimeError: synthetic failure"
        return doc
    te = float(np.clip(rng.normal(0.3 + 0.1 * layer, 0.15), 0, 1))
    doc["trace"]["tracing_effect"] = te
    base_success = 0.9 - 0.15 * layer
    success = bool(rng.random() < base_success)
    drop = float(np.clip(degree_effect * degree + rng.normal(0, 0.02), 0, 1))
    n_same_subject = max(0, degree // 2)
    groups = {
        "target": _group(rng, 3, 0.9 if success else 0.2),
        "paraphrase": _group(rng, 1, 0.7 if success else 0.1),
        "same_subject": _group(rng, n_same_subject, drop),
        "same_object": _group(rng, int(rng.integers(0, 4)), drop / 2),
        "subject_as_object": _group(rng, max(0, degree - n_same_subject), drop / 2),
        "neighbors_1hop": _group(rng, 2 * degree, drop / 4),
        "neighbors_2hop": _group(rng, 4 * degree, drop / 8),
        "same_relation": _group(rng, int(rng.integers(2, 8)), drop / 4),
        "unrelated": _group(rng, 40, drop / 20),
    }
    dn = float(1.0 + 0.05 * degree + abs(rng.normal(0, 0.3)))
    acc_drop = drop / 10
    doc.update({
        "edit": {"method": method, "layer": layer, "delta_norms": {f"layer{layer}.mlp": dn}, "total_delta_norm": dn},
        "delta_norm": dn, "success": success, "wrecked": False,
        "efficacy": {"objective": "erase", "success": success, "target_prompts_success_rate": 1.0 if success else 0.0,
                     "target_recall_after": 0.0 if success else 1.0, "target_recall_before": 1.0,
                     "target_p_before": 0.9, "target_p_after": 0.05 if success else 0.7,
                     "target_rank_after": 3 if success else 0, "paraphrase_recall_before": 1.0,
                     "paraphrase_recall_after": 0.0 if success else 1.0, "paraphrase_success_rate": 0.5},
        "groups": groups,
        "global": {"n": 150, "acc_before": 0.99, "acc_after": 0.99 - acc_drop, "acc_drop": acc_drop,
                   "n_flipped_excluding_target": int(round(acc_drop * 150)),
                   "flip_rate_excluding_target": acc_drop, "mean_p_drop_excluding_target": drop / 5},
        "kl": {"n": 40, "mean": drop / 10, "max": drop},
        "hase": {"kind": "erasure", "efficacy_score": float(np.clip(base_success + rng.normal(0, 0.1), 0, 1)),
                 "paraphrase_score": 0.5, "neighborhood_score": 1.0 - drop / 4,
                 "neighborhood_groups": ["same_object", "same_relation"], "tracing_effect": te},
        "revert_verified": True,
    })
    return doc


def synthetic_cases(n_facts: int = 20, methods=("rome", "r-rome"), layers=(0, 1, 2), n_bins: int = 5,
                    degree_effect: float = 0.02, seed: int = 0, n_errors: int = 0,
                    sites=("subject_last",)) -> list[dict]:
    """Cases for `n_facts` facts × methods × sites × layers with subject degrees 2..~41 spread over `n_bins`
    bins; a subject of degree d contributes 1 + d // 8 facts (at most 4)."""
    rng = np.random.default_rng(seed)
    facts: list[tuple[int, str]] = []
    s = 0
    while len(facts) < n_facts:
        deg = int(rng.zipf(1.8)) + 1
        deg = min(deg, 41)
        for _ in range(min(1 + deg // 8, 4, n_facts - len(facts))):
            facts.append((deg, f"Subject {s}"))
        s += 1
    facts.sort(key=lambda f: f[0])
    out = []
    for i, (deg, subj) in enumerate(facts):
        b = min(n_bins - 1, i * n_bins // n_facts)
        for m in methods:
            for site in sites:
                for layer in layers:
                    out.append(synthetic_case(rng, i, m, layer, deg, n_bins, b, degree_effect, seed=seed, site=site,
                                              subject=subj))
    for j in range(n_errors):
        out.append(synthetic_case(rng, n_facts + j, methods[0], layers[0], 3, n_bins, 0, status="error", seed=seed))
    return out


def planted_cases(subject_degrees, effect: float, seed: int = 0, facts_per_subject=None, layers=(0,),
                  method: str = "rome", site: str = "last", subject_sd: float = 0.5, noise_sd: float = 0.5,
                  effect_fn=np.log, prefix: str = "S", n_bins: int = 5) -> list[dict]:
    """Cases whose same_subject.mean_p_drop = effect · effect_fn(degree) + u_subject + noise, per fact.

    `subject_degrees`: one degree per subject; `facts_per_subject(degree)` (default 1 + degree // 4, at most
    6) facts each; the subject effect u ~ N(0, subject_sd²) is shared by a subject's facts (so facts are not
    independent); every fact is edited at every layer in `layers` with the same value (a repeated edit)."""
    rng = np.random.default_rng(seed)  # the planted values: independent of how many layers
    rng_case = np.random.default_rng(seed + 1)  # the rest of each case
    per = facts_per_subject or (lambda d: min(1 + int(d) // 4, 6))
    degs = np.asarray(subject_degrees, dtype=float)
    ranks = np.argsort(np.argsort(degs, kind="stable"), kind="stable")
    out, fid = [], 0
    for s, deg in enumerate(degs):
        u = rng.normal(0, subject_sd)
        b = int(ranks[s] * n_bins // len(degs))
        for _ in range(per(deg)):
            y = float(effect * effect_fn(deg) + u + rng.normal(0, noise_sd))
            for layer in layers:
                c = synthetic_case(rng_case, fid, method, layer, int(deg), n_bins, b, 0.0, site=site, seed=seed,
                                   subject=f"{prefix}{s}")
                c["case_id"] = f"{prefix}-{fid}-{layer}-{seed}"
                g = c["groups"]["same_subject"]
                g.update(n=3, n_recalled_before=3, mean_p_drop=y, flip_rate=0.0, any_broke=False)
                c["success"] = c["efficacy"]["success"] = True
                out.append(c)
            fid += 1
    return out
