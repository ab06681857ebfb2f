"""The deletion interface: objectives defined once, type-matched replace targets, efficacy on the edited
weights, revert verification, site None for gradient methods, a registry that refuses duplicate names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdel.delete import DeletionMethod, DeletionRequest, EditContext, apply_deletion, get_method, register_method
from kdel.delete.efficacy import RowScores
from kdel.delete.hparams import load_hparams
from kdel.delete.objectives import OBJECTIVES, REWRITING, get_objective, new_targets_for
from kdel.errors import UserError
from kdel.facts import FactTable
from kdel.models.scoring import score_targets
from tests.unit.test_rome_helpers import FACTS, memorized_model, sentence_table, weights_hash


def test_objective_tests_follow_their_definitions():
    beaten = [torch.tensor([3.0, -2.5])]  # second token beaten by 2.5
    leading = [torch.tensor([3.0, 2.5])]
    erase, replace, amplify = get_objective("erase"), get_objective("replace"), get_objective("amplify")
    assert erase.met(beaten, 2.0) and not erase.met(beaten, 3.0) and not erase.met(leading, 0.0)
    assert replace.met(leading, 2.5) and not replace.met(leading, 2.6) and not replace.met(beaten, 0.0)
    assert not amplify.met(leading, 0.0)  # amplify never stops early
    lp = torch.log(torch.tensor([0.5, 0.25]))
    assert float(erase.loss(lp)) == pytest.approx(0.375)  # mean p(o) itself
    assert float(replace.loss(lp)) == pytest.approx(-float(lp.mean()))  # NLL of the new target
    before = RowScores(np.log([0.9, 0.9, 0.2]), np.array([True, True, False]))
    after = RowScores(np.log([0.95, 0.5, 0.3]), np.array([True, True, True]))
    assert list(erase.success(before, after)) == [False, False, False]
    assert list(amplify.success(before, after)) == [True, False, True]  # recalled and p up
    assert list(get_objective("fact_forcing").success(before, after)) == [True, False, True]
    assert set(REWRITING) == {"replace", "unknown", "error_injection", "tracing_reversal"}
    assert {"tracing_reversal", "fact_forcing"} <= set(OBJECTIVES)
    with pytest.raises(UserError, match="unknown objective"):
        get_objective("forget")


def test_replace_picks_a_seeded_object_of_the_same_relation(tiny_kg):
    table = FactTable.from_kg(tiny_kg)
    picks = {}
    for fact in table.facts[:40]:
        same = {g.target for g in table.facts if g.relation == fact.relation} - {fact.target, fact.subject}
        (t,) = new_targets_for("replace", [fact], table, seed=3)
        assert t == new_targets_for("replace", [fact], table, seed=3)[0]  # seeded
        if same:
            assert t in same
        assert t != fact.target
        picks[fact.id] = t
    assert len(set(picks.values())) > 3  # not one constant answer
    assert new_targets_for("erase", table.facts[:2], table) is None
    assert new_targets_for("tracing_reversal", table.facts[:1], table) is None  # chosen on the model at edit time
    with pytest.raises(UserError, match="takes no new target"):
        new_targets_for("unknown", table.facts[:1], table, ["x"])


def test_record_carries_chosen_target_source_and_efficacy_on_edited_weights():
    model, tok = memorized_model("gpt2")
    ctx = EditContext(model, tok, sentence_table())
    m = get_method("r-rome")
    m.hparams = load_hparams(m.hparams_class, overrides={"steps": 30, "n_prefixes": 0})
    handle, record = apply_deletion(m, ctx, DeletionRequest([FACTS[3]], "replace", layer=1, site="last", seed=1))
    (target,) = record.new_targets
    assert target != FACTS[3].target and record.target_sources == ["other_object"]  # no other fact of born_in
    assert record.info["new_targets"] == [{"target": target, "source": "other_object", "p_noised": None}]
    s = score_targets(model, tok, [FACTS[3].prompt], [target])
    eff = record.efficacy[0]
    assert eff.aim_target == target and eff.success == bool(s.recalled[0]) and record.success == eff.success
    assert eff.aim_p_after == pytest.approx(float(s.prob[0]), rel=1e-5)
    assert record.to_json()["efficacy"][0]["fact_id"] == 3
    handle.revert()


def test_verify_detects_a_model_that_is_not_back():
    model, tok = memorized_model("gpt2")
    ctx = EditContext(model, tok, sentence_table())
    m = get_method("rome")
    m.hparams = load_hparams(m.hparams_class, overrides={"steps": 3, "n_prefixes": 0})
    handle, _ = apply_deletion(m, ctx, DeletionRequest([FACTS[0]], "erase", layer=1), verify="full")
    handle.revert()
    assert handle.verify("touched") and handle.verify("full")
    with torch.no_grad():
        model.get_parameter("transformer.wte.weight")[0, 0] += 1.0  # a tensor the edit never touched
    assert handle.verify("touched")
    with pytest.raises(RuntimeError, match="hash differs"):
        handle.verify("full")
    with pytest.raises(UserError, match="verify must be"):
        handle.verify("always")


def test_gradient_methods_record_no_site(random_model):
    model, tok = random_model("gpt2")
    ctx = EditContext(model, tok, sentence_table())
    before = weights_hash(model)
    for name in ("ga", "ft"):
        handle, record = apply_deletion(get_method(name), ctx, DeletionRequest([FACTS[0]], "erase", site="last"))
        assert record.site is None
        handle.revert()
    assert weights_hash(model) == before
    m = get_method("rome")
    m.hparams = load_hparams(m.hparams_class, overrides={"steps": 1, "n_prefixes": 0})
    handle, record = apply_deletion(m, ctx, DeletionRequest([FACTS[0]], "erase", site="last"))
    assert record.site == "last"
    handle.revert()


def test_registry_refuses_a_second_class_under_a_taken_name():
    rome_cls = type(get_method("rome"))
    assert register_method(rome_cls) is rome_cls  # the same class again is harmless (re-import)

    class Impostor(DeletionMethod):
        name = "rome"
        hparams_class = dict

        def parameters_to_edit(self, ctx, request):
            return []

        def edit(self, ctx, request):
            return {}

    with pytest.raises(ValueError, match="already registered"):
        register_method(Impostor)
    assert type(get_method("rome")) is rome_cls
