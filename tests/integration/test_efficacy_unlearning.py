"""Efficacy of ft / ga / npo under the collateral bound, and sequential deletion, on the trained tiny model."""

from __future__ import annotations

import random

import pytest
import torch

from kdel.delete import EditContext, get_method
from kdel.delete.degradation import COLLATERAL_BOUND, evaluate_erasures, recall_all, sequential_deletion, summarize
from kdel.delete.hparams import load_hparams
from kdel.facts import FactTable

# Settings tried in order on the calibration facts (least invasive first), as in experiments/bench/deletion.py.
GRIDS = {
    "ft": [{}, {"linf_bound": 3e-2}, {"window": 3, "linf_bound": 3e-2}],
    "ga": [{"lr": 1e-4, "steps": 100}, {}],
    "npo": [{"lr": 1e-4, "steps": 100}, {}],
}


@pytest.fixture(scope="module")
def ctx(trained_model_dir, tiny_kg):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(trained_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(trained_model_dir)
    return EditContext(model, tok, FactTable.from_kg(tiny_kg))


def _method(name, overrides):
    m = get_method(name)
    return get_method(name, load_hparams(m.hparams_class, overrides=overrides)) if overrides else m


def test_sequential_deletion_reports_each_step_and_reverts(ctx):
    ids = [i for i, r in enumerate(recall_all(ctx)) if r][:4]
    before = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    steps = sequential_deletion(_method("ga", {"lr": 1e-4, "steps": 100}), ctx, ids)
    assert [s.step for s in steps] == [1, 2, 3, 4] and [s.fact_id for s in steps] == ids
    assert all(0.0 <= s.efficacy <= 1.0 and 0.0 <= s.global_acc <= 1.0 for s in steps)
    assert steps[0].efficacy == 1.0 and all(s.delta_norm > 0 for s in steps)
    assert all(torch.equal(p, before[n]) for n, p in ctx.model.named_parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ft", "ga", "npo"])
def test_erase_efficacy_under_collateral_bound(ctx, name):
    pool = ctx.table.unrelated_sample(200, 0)
    ctx.unrelated_pool = pool
    recalled = [i for i, r in enumerate(recall_all(ctx)) if r]
    picked = random.Random(0).sample(recalled, len(recalled))
    calib, evaluation = picked[:10], picked[10:60]
    chosen = None
    for overrides in GRIDS[name]:
        if summarize(name, evaluate_erasures(_method(name, overrides), ctx, calib, pool)).efficacy >= 0.9:
            chosen = overrides
            break
    assert chosen is not None, f"{name}: no setting reached 90% on the calibration facts"
    cases = evaluate_erasures(_method(name, chosen), ctx, evaluation, pool)
    s = summarize(name, cases)
    assert s.n == len(evaluation) >= 40
    assert s.efficacy >= 0.9, s
    # after each edit: the case's unrelated group (or, where the dense tiny KG leaves it empty, all other facts)
    assert s.min_collateral_acc >= COLLATERAL_BOUND, s
