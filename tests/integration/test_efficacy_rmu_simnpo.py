"""Slow: RMU and SimNPO at their defaults erase >= 90% of up to 50 recalled facts of the trained tiny model, an
edit counting only when its `unrelated` accuracy stays >= 0.9 (DESIGN §12), and every edit reverts bit for bit."""

from __future__ import annotations

import random

import pytest
import torch

from kdel.delete import EditContext, get_method
from kdel.delete.degradation import COLLATERAL_BOUND, evaluate_erasures, recall_all, summarize
from kdel.facts import FactTable


@pytest.fixture(scope="module")
def ctx(trained_model_dir, tiny_kg):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(trained_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(trained_model_dir)
    return EditContext(model, tok, FactTable.from_kg(tiny_kg))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rmu", "simnpo"])
def test_erases_90_percent_of_50_facts_under_the_collateral_bound(ctx, name):
    pool = ctx.table.unrelated_sample(200, 0)
    ctx.unrelated_pool = pool  # retain sets avoid the facts collateral is measured on
    recalled = [i for i, r in enumerate(recall_all(ctx)) if r]
    facts = random.Random(0).sample(recalled, min(50, len(recalled)))
    before = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    cases = evaluate_erasures(get_method(name), ctx, facts, pool)
    s = summarize(name, cases)
    print(s)
    assert s.n == len(facts) >= 40
    assert s.efficacy >= 0.9, s  # erased, and the case's unrelated accuracy >= 0.9
    assert s.mean_unrelated_acc >= COLLATERAL_BOUND, s
    assert all(torch.equal(p, before[n]) for n, p in ctx.model.named_parameters())
