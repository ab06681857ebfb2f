"""MEMIT: one fact on one layer has r-ROME's update direction; a batch over a window lowers p(o); revert."""

from __future__ import annotations

import pytest

from kdel.delete.base import DeletionRequest, EditContext, apply_deletion, get_method
from kdel.delete.hparams import load_hparams
from kdel.delete.memit import layer_window
from tests.unit.test_rome_helpers import FACTS, memorized_model, sentence_table, weights_hash

SHARED = {"steps": 10, "n_prefixes": 2, "clamp_factor": 100.0, "weight_decay": 0.0, "kl_factor": 0.0625}


def _method(name, **over):
    m = get_method(name)
    m.hparams = load_hparams(m.hparams_class, overrides={**SHARED, **over})
    return m


def test_layer_window():
    assert layer_window(2, 3, 4) == [1, 2, 3]
    assert layer_window(0, 3, 4) == [0, 1, 2]
    assert layer_window(3, 3, 4) == [1, 2, 3]
    assert layer_window(1, 1, 4) == [1]
    assert layer_window(1, 9, 4) == [0, 1, 2, 3]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_one_fact_one_layer_matches_r_rome_direction(family):
    model, tok = memorized_model(family)
    ctx = EditContext(model, tok, sentence_table())
    request = DeletionRequest([FACTS[0]], "erase", layer=1, site="subject_last")
    name = ctx.adapter.mlp_out_param_name(1)
    before = model.get_parameter(name).detach().clone()
    h1, r1 = apply_deletion(_method("r-rome"), ctx, request)
    d_rrome = (model.get_parameter(name).detach() - before).double().flatten()
    h1.revert()
    h2, r2 = apply_deletion(_method("memit", n_layers=1), ctx, request)
    assert r2.layers == [1] and list(r2.delta_norms) == [name]
    d_memit = (model.get_parameter(name).detach() - before).double().flatten()
    h2.revert()
    assert d_rrome.norm() > 0 and d_memit.norm() > 0
    cos = float(d_rrome @ d_memit / (d_rrome.norm() * d_memit.norm()))
    assert cos > 0.999
    assert d_memit.norm() < d_rrome.norm()  # λC shrinks it


def test_batch_over_window_lowers_p_and_reverts():
    model, tok = memorized_model("gpt2")
    ctx = EditContext(model, tok, sentence_table())
    original = weights_hash(model)
    request = DeletionRequest([FACTS[2], FACTS[3]], "erase", layer=1, site="last")
    handle, record = apply_deletion(_method("memit", steps=30, update_weight=10.0, clamp_factor=0.75, n_prefixes=0), ctx, request)
    assert record.layers == [0, 1, 2]
    assert len(record.delta_norms) == 3 and all(v > 0 for v in record.delta_norms.values())
    assert all(a < 0.5 * b for a, b in zip(record.p_after, record.p_before))
    assert all(layer["cov_tokens"] > 0 for layer in record.info["per_layer"])
    handle.revert()
    assert weights_hash(model) == original
