"""Constrained fine-tuning: exact L∞ projection, reversibility, touched parameters, erase, bad hparams."""

from __future__ import annotations

import json

import pytest
import torch

from kdel.delete import DeletionRequest, EditContext, apply_deletion, get_method
from kdel.delete.ft import FTHparams, project_linf
from kdel.errors import UserError
from kdel.facts import FactTable


def _random_ctx(random_model, family, tmp_path):
    model, tok = random_model(family)
    path = tmp_path / "facts.jsonl"
    rows = [
        {"subject": "Maria Lopez", "prompt": "Maria Lopez works with", "target": "John Smith",
         "prompts": ["Maria Lopez works with", "Maria Lopez is a colleague of"]},
        {"subject": "Ann Lee", "prompt": "Ann Lee was born in", "target": "Rome"},
        {"subject": "John Smith", "prompt": "John Smith is a colleague of", "target": "Ann Lee"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = FactTable.from_jsonl(path)
    return EditContext(model, tok, table)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_linf_bound_is_exact_and_reached(random_model, tmp_path, family):
    ctx = _random_ctx(random_model, family, tmp_path)
    bound = 1e-3
    method = get_method("ft", FTHparams(lr=1e-2, steps=8, linf_bound=bound, early_stop=False))
    req = DeletionRequest([ctx.table.facts[0]], "erase", layer=1)
    names = method.parameters_to_edit(ctx, req)
    before = {n: ctx.model.get_parameter(n).detach().clone() for n in names}
    handle, record = apply_deletion(method, ctx, req)
    for n in names:
        delta = (ctx.model.get_parameter(n).detach().double() - before[n].double()).abs()
        assert float(delta.max()) <= bound  # exact, no tolerance
        assert float(delta.max()) >= bound * (1 - 1e-4)  # lr >> bound: the ball's surface is reached
    assert record.info["max_abs_delta"] <= bound
    assert set(record.delta_norms) == set(names) and all(v > 0 for v in record.delta_norms.values())
    handle.revert()
    for n in names:
        assert torch.equal(ctx.model.get_parameter(n), before[n])


def test_project_linf_corrects_rounding():
    torch.manual_seed(0)
    w0 = torch.randn(1000) * 10
    w = w0 + torch.randn(1000)
    bound = 1e-3 / 3  # not representable: plain w0 + clamp(...) overshoots on some elements
    project_linf(w, w0, bound)
    d = (w.double() - w0.double()).abs()
    assert float(d.max()) <= bound
    assert float(d.max()) > bound * 0.999


def test_ft_touches_only_listed_parameters(random_model, tmp_path):
    ctx = _random_ctx(random_model, "gpt2", tmp_path)
    method = get_method("ft", FTHparams(window=3, modules="mlp", steps=3, early_stop=False, lr=1e-2))
    req = DeletionRequest([ctx.table.facts[0]], "erase", layer=1)
    assert method.layers_of(ctx, req) == [0, 1, 2]
    listed = set(method.parameters_to_edit(ctx, req))
    before = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    handle, _ = apply_deletion(method, ctx, req)
    changed = {n for n, p in ctx.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= listed
    handle.revert()
    assert all(torch.equal(p, before[n]) for n, p in ctx.model.named_parameters())


def test_ft_replace_objective_runs(random_model, tmp_path):
    ctx = _random_ctx(random_model, "gpt2", tmp_path)
    method = get_method("ft", FTHparams(steps=5, lr=1e-2, linf_bound=5e-2, early_stop=False))
    req = DeletionRequest([ctx.table.facts[1]], "replace", new_targets=["Paris"], layer=1)
    handle, record = apply_deletion(method, ctx, req)
    assert record.new_target_p_after[0] > record.new_target_p_before[0]
    handle.revert()


@pytest.mark.parametrize(
    "override, word",
    [({"lr": -1e-3}, "lr"), ({"steps": 0}, "steps"), ({"linf_bound": 0.0}, "linf_bound"),
     ({"linf_bound": -1.0}, "linf_bound"), ({"window": 0}, "window")],
)
def test_bad_ft_hparams_are_user_errors(override, word):
    from kdel.delete.hparams import load_hparams

    with pytest.raises(UserError) as e:
        load_hparams(FTHparams, overrides=override)
    msg = str(e.value)
    assert "\n" not in msg and word in msg and msg.startswith("ft:")
    with pytest.raises(UserError):
        FTHparams(**override)


def test_ft_erases_a_trained_fact_and_stops_early(trained_model_dir, tiny_kg):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(trained_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(trained_model_dir)
    ctx = EditContext(model, tok, FactTable.from_kg(tiny_kg))
    fact = ctx.table.facts[0]
    hp = FTHparams()
    handle, record = apply_deletion(get_method("ft", hp), ctx, DeletionRequest([fact], "erase"))
    assert record.p_before[0] > 0.5
    assert record.info["met"] and record.info["steps"] < hp.steps
    assert record.p_after[0] < record.p_before[0] / 2
    assert record.info["max_abs_delta"] <= hp.linf_bound
    handle.revert()
