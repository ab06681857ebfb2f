"""Risk features against their definitions: the first-order effect of a rank-one update on log p(o) (checked
against a real small update), object density, relation vectors, the weighted AUROC and its bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.slow
def test_first_order_dlogp_matches_a_small_real_update(trained_model_dir, tiny_kg, tmp_path):
    from kdel.facts import FactTable
    from kdel.models.loading import load_model_for_table
    from kdel.risk.context import Case, FeatureContext
    from kdel.risk.features import first_order_dlogp, kappa_matrix

    table = FactTable.from_kg(tiny_kg)
    model, tok = load_model_for_table(trained_model_dir, table, "cpu")
    layer = 2
    ctx = FeatureContext(model, tok, table, cache_dir=tmp_path, layers=[layer])
    tk = ctx.target_keys(Case(fact_id=5, method="rome", site="last", layer=layer))
    g_t = ctx.base.grad_at("last", layer)[5]
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(ctx.adapter.d_model, generator=gen, dtype=torch.float64)
    noise *= float(g_t.norm()) / float(noise.norm())
    delta = -0.005 * (g_t + 0.5 * noise) / float(g_t @ g_t)  # lowers the target's log p by ~0.005 (1st order)
    predicted = first_order_dlogp(ctx.base, layer, kappa_matrix(ctx.base, layer, tk), delta)
    before = ctx.base.logp.copy()
    update = torch.outer(delta / tk.denominator, tk.u)  # ΔW = (δ / uᵀk*) uᵀ: moves the key k by δ·κ(k)
    ctx.adapter.add_to_mlp_out(layer, update)
    try:
        from kdel.risk.base import compute_base

        after = compute_base(model, tok, table, layers=[layer]).logp
    finally:
        ctx.adapter.add_to_mlp_out(layer, -update)
    measured = after - before
    big = np.abs(measured) > 1e-4
    assert big.sum() >= 5
    assert np.corrcoef(predicted, measured)[0, 1] > 0.99
    assert np.linalg.norm(predicted - measured) <= 0.06 * np.linalg.norm(measured)  # the rest: 2nd order


def test_object_density_and_relation_vectors_by_hand():
    from kdel.risk.features import cosine_rows, object_density, relation_vectors

    vec = np.array([[1.0, 0, 0], [0.8, 0.6, 0], [0, 1.0, 0], [1.0, 0, 0]])  # facts 0 and 3 share an object
    dens = object_density(vec, ["a", "b", "c", "a"], k=1)
    # a's nearest other object is b (cos 0.8); b's is a (0.8) rather than c (0.6); c's is b (0.6)
    np.testing.assert_allclose(dens, [0.8, 0.8, 0.6, 0.8])
    M = np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 8.0]])
    rv = relation_vectors(M, ["r", "r", None])
    np.testing.assert_allclose(rv["r"], M[:2].mean(0) - M.mean(0))
    np.testing.assert_allclose(cosine_rows(np.eye(2), np.array([1.0, 1.0])), [2 ** -0.5] * 2)


def test_weighted_auroc_and_cluster_bootstrap():
    from sklearn.metrics import roc_auc_score

    from kdel.risk.metrics import _Ranked, auroc_with_ci, cluster_counts

    rng = np.random.default_rng(0)
    y = rng.uniform(size=400) < 0.3
    score = np.round(rng.normal(size=400) + 1.2 * y, 1)  # ties on purpose
    w = rng.integers(0, 4, size=400).astype(float)
    assert _Ranked(y, score).auroc(w) == pytest.approx(roc_auc_score(y, score, sample_weight=w), abs=1e-12)
    clusters = [f"s{i % 25}" for i in range(400)]
    idx, counts = cluster_counts(clusters, 50, seed=1)
    assert counts.shape == (50, 25) and (counts.sum(axis=1) == 25).all()
    assert len(set(clusters[i] for i in range(400) if idx[i] == idx[0])) == 1
    res = auroc_with_ci(y, {"good": score, "noise": rng.normal(size=400)}, clusters, n_boot=200, reference="good")
    lo, hi = res["good"]["ci"]
    assert lo < res["good"]["auroc"] < hi
    assert res["noise"]["difference"]["ci"][0] > 0  # the informative score beats noise, CI above 0
    assert res["noise"]["difference"]["p_one_sided"] == pytest.approx(1 / 201)  # no replicate at or below 0
    same = auroc_with_ci(y, {"good": score, "copy": score.copy()}, clusters, n_boot=200, reference="good")
    assert same["copy"]["difference"]["p_one_sided"] == 1.0  # every replicate's difference is exactly 0
