"""RMU and SimNPO: their losses are the papers' formulas, only the intended weights move, the forget states go
where RMU sends them, both erase with early stopping, revert bit for bit and refuse non-finite updates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdel.delete import DeletionRequest, EditContext, apply_deletion, get_method
from kdel.delete.hparams import load_hparams
from kdel.delete.rmu import RMUHparams
from kdel.delete.rmu.method import steering_direction
from kdel.delete.simnpo import SimNPOHparams
from kdel.delete.retain import select_retain_facts
from kdel.delete.unlearn.method import fact_pairs, forget_pairs
from kdel.errors import UserError
from kdel.facts import FactTable
from kdel.models.scoring import score_targets


@pytest.fixture(scope="module")
def ctx(trained_model_dir, tiny_kg):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(trained_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(trained_model_dir)
    return EditContext(model, tok, FactTable.from_kg(tiny_kg))


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_simnpo_loss_is_the_length_normalised_reference_free_formula(ctx):
    fact = ctx.table.facts[3]
    hp = SimNPOHparams(beta=2.5, gamma=0.5)
    s = score_targets(ctx.model, ctx.tokenizer, list(fact.prompts), [fact.target] * len(fact.prompts))
    expected = float(torch.mean(2 / hp.beta * F.softplus(hp.beta * torch.tensor(s.logprob / s.n_target_tokens) + hp.gamma)))
    before = _snapshot(ctx.model)
    handle, record = apply_deletion(get_method("simnpo", hp), ctx, DeletionRequest([fact], "erase"))
    assert record.info["first_loss"] == pytest.approx(expected, rel=1e-4)
    assert record.info["met"] and record.info["steps"] < hp.steps and record.efficacy[0].success
    assert record.site is None and record.p_after[0] < record.p_before[0]
    handle.revert()
    assert all(torch.equal(p, before[n]) for n, p in ctx.model.named_parameters())


def test_rmu_trains_only_the_mlp_out_of_its_layers_and_misdirects_the_forget_states(ctx):
    fact = ctx.table.facts[3]
    hp = RMUHparams(retain="none")
    method = get_method("rmu", hp)
    request = DeletionRequest([fact], "erase", layer=2, seed=5)
    assert method.layers_of(ctx, request) == [0, 1, 2]
    listed = set(method.parameters_to_edit(ctx, request))
    assert listed == {ctx.adapter.mlp_out_param_name(i) for i in (0, 1, 2)}
    pairs = forget_pairs(ctx, request)
    rows, pos = pairs.positions("answer", "cpu")
    layer2 = {"h": ctx.adapter.layer(2)}
    with torch.no_grad():
        h_before = pairs.forward(ctx.model, ctx.adapter, layer2).hidden["h"][rows, pos]
    before = _snapshot(ctx.model)
    handle, record = apply_deletion(method, ctx, request)
    changed = {n for n, p in ctx.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == listed and record.layers == [0, 1, 2] and record.site is None
    coef = hp.steering_scale * float(h_before.norm(dim=-1).mean())
    assert record.info["steering_coef"] == pytest.approx(coef, rel=1e-5) and record.info["rmu_layer"] == 2
    target = coef * steering_direction(h_before.shape[-1], 5)
    with torch.no_grad():
        h_after = pairs.forward(ctx.model, ctx.adapter, layer2).hidden["h"][rows, pos]
    assert float(((h_after - target) ** 2).mean()) < float(((h_before - target) ** 2).mean())
    assert record.info["met"] and record.efficacy[0].success
    handle.revert()
    assert all(torch.equal(p, before[n]) for n, p in ctx.model.named_parameters())


def test_rmu_retain_term_holds_the_retain_states(ctx):
    fact = max(ctx.table.facts, key=lambda f: len(select_retain_facts(ctx.table, [f], 10_000)))
    retain = select_retain_facts(ctx.table, [fact], 8)
    pairs = fact_pairs(ctx.tokenizer, retain)
    rows, pos = pairs.positions("all", "cpu")
    layer1 = {"h": ctx.adapter.layer(1)}

    def states():
        with torch.no_grad():
            return pairs.forward(ctx.model, ctx.adapter, layer1).hidden["h"][rows, pos]

    h0 = states()
    drift = {}
    for kind in ("none", "act"):
        hp = RMUHparams(retain=kind, retain_size=8, early_stop=False, steps=15)
        handle, record = apply_deletion(get_method("rmu", hp), ctx, DeletionRequest([fact], "erase", layer=1))
        drift[kind] = float(((states() - h0) ** 2).mean())
        assert record.info["retain"] == kind
        handle.revert()
    assert record.info["retain_fact_ids"] == [f.id for f in retain]
    assert drift["act"] < 0.5 * drift["none"], drift


@pytest.mark.parametrize("name", ["rmu", "simnpo"])
def test_non_finite_updates_are_refused(ctx, name, monkeypatch):
    method = get_method(name)
    method.hparams = load_hparams(method.hparams_class, overrides={"steps": 3})
    real = type(method).forget_loss

    def poisoned(self, *args):
        loss = real(self, *args)
        return lambda fp: loss(fp) * float("nan")

    monkeypatch.setattr(type(method), "forget_loss", poisoned)
    before = _snapshot(ctx.model)
    with pytest.raises(UserError, match="non-finite update"):
        apply_deletion(method, ctx, DeletionRequest([ctx.table.facts[3]], "erase", layer=1))
    assert all(torch.equal(p, before[n]) for n, p in ctx.model.named_parameters())


@pytest.mark.parametrize(
    "cls, override, word",
    [(SimNPOHparams, {"beta": 0.0}, "beta"), (SimNPOHparams, {"gamma": -1.0}, "gamma"),
     (SimNPOHparams, {"retain": "act"}, "retain"), (RMUHparams, {"steering_scale": 0.0}, "steering_scale"),
     (RMUHparams, {"positions": "subject"}, "positions"), (RMUHparams, {"n_train_layers": 0}, "n_train_layers"),
     (RMUHparams, {"retain": "kl"}, "retain"), (RMUHparams, {"lr": -1.0}, "lr")],
)
def test_bad_hparams_are_one_line_user_errors(cls, override, word):
    with pytest.raises(UserError) as e:
        load_hparams(cls, overrides=override)
    assert "\n" not in str(e.value) and word in str(e.value)
