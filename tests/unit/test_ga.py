"""Gradient ascent: retain set selection, retain terms protect the retain set, reversibility, bad hparams."""

from __future__ import annotations

import pytest
import torch

from kdel.delete import DeletionRequest, EditContext, apply_deletion, get_method
from kdel.delete.ga import GAHparams
from kdel.delete.npo import NPOHparams
from kdel.delete.retain import excluded_fact_ids, select_retain_facts
from kdel.errors import UserError
from kdel.facts import FactTable
from kdel.models.scoring import score_targets


@pytest.fixture(scope="module")
def trained(trained_model_dir, tiny_kg):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(trained_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(trained_model_dir)
    return EditContext(model, tok, FactTable.from_kg(tiny_kg))


def _best_retain_fact(table):
    """The fact with the most retain-eligible facts (the tiny KG is dense: most have few)."""
    return max(table.facts, key=lambda f: (len(select_retain_facts(table, [f], 10_000)), -f.id))


def _retain_recall(ctx, facts):
    prompts = [p for f in facts for p in f.prompts]
    targets = [f.target for f in facts for _ in f.prompts]
    return float(score_targets(ctx.model, ctx.tokenizer, prompts, targets).recalled.mean())


def test_retain_set_excludes_probe_groups_and_pool(tiny_kg):
    table = FactTable.from_kg(tiny_kg)
    fact = _best_retain_fact(table)
    pool = table.unrelated_sample(10, 0)
    groups = table.probe_groups(fact.id, [])
    retain = select_retain_facts(table, [fact], 1000, seed=3, unrelated_pool=pool)
    ids = {f.id for f in retain}
    assert ids, "the chosen fact must have a non-empty retain set"
    for members in groups.values():
        assert not ids & set(members)
    assert not ids & set(pool)
    assert len(ids) == len(table) - len(excluded_fact_ids(table, [fact], pool))
    small = select_retain_facts(table, [fact], 3, seed=3, unrelated_pool=pool)
    assert len(small) == 3 and small == select_retain_facts(table, [fact], 3, seed=3, unrelated_pool=pool)


@pytest.mark.parametrize("method, retain", [("ga", "gd"), ("ga", "kl"), ("npo", "gd"), ("npo", "kl")])
def test_retain_term_keeps_retain_set_accuracy(trained, method, retain):
    ctx = trained
    fact = _best_retain_fact(ctx.table)
    accs = {}
    for kind in ("none", retain):
        cls = GAHparams if method == "ga" else NPOHparams
        hp = cls(lr=1e-3, steps=20, early_stop=False, retain=kind, retain_size=32)
        handle, record = apply_deletion(get_method(method, hp), ctx, DeletionRequest([fact], "erase"))
        retain_ids = record.info["retain_fact_ids"] or [f.id for f in select_retain_facts(ctx.table, [fact], 32, 0)]
        accs[kind] = _retain_recall(ctx, [ctx.table.facts[i] for i in retain_ids])
        assert record.p_after[0] < 1e-3  # both erase the fact
        handle.revert()
    assert accs[retain] > accs["none"] + 0.3, accs
    assert accs[retain] >= 0.9, accs


def test_ga_early_stop_touches_only_listed_and_reverts(trained):
    ctx = trained
    fact = next(f for f in ctx.table.facts[5:] if _retain_recall(ctx, [f]) == 1.0)
    method = get_method("ga", GAHparams(layers=[1, 2]))
    req = DeletionRequest([fact], "erase")
    listed = set(method.parameters_to_edit(ctx, req))
    assert listed and all(".h.1.mlp." in n or ".h.2.mlp." in n for n in listed)
    before = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    handle, record = apply_deletion(method, ctx, req)
    assert record.info["met"] and 0 < record.info["steps"] < method.hparams.steps
    assert record.info["final_margin"] >= method.hparams.margin
    changed = {n for n, p in ctx.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= listed and set(record.delta_norms) == listed
    handle.revert()
    assert all(torch.equal(p, before[n]) for n, p in ctx.model.named_parameters())


def test_ga_refuses_rewriting_objectives(trained):
    with pytest.raises(UserError, match="does not support objective"):
        apply_deletion(get_method("ga"), trained, DeletionRequest([trained.table.facts[0]], "replace", new_targets=["x"]))


@pytest.mark.parametrize(
    "override, word",
    [({"lr": -1e-3}, "lr"), ({"lr": 0.0}, "lr"), ({"steps": 0}, "steps"), ({"retain": "both"}, "retain"),
     ({"params": "attn"}, "params"), ({"margin": 0.0}, "margin"), ({"forget_loss": "kl"}, "forget_loss")],
)
def test_bad_ga_hparams_are_user_errors(override, word):
    from kdel.delete.hparams import load_hparams

    with pytest.raises(UserError) as e:
        load_hparams(GAHparams, overrides=override)
    assert "\n" not in str(e.value) and word in str(e.value) and str(e.value).startswith("ga:")
