"""One sequential trial on the trained tiny model: its checkpoints equal an independent re-computation, the
measurement does not change the edits, and the whole handle reverts every step bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdel.audit.evaluate import BaseScores
from kdel.audit.sequential import SequentialConfig, TrialRunner, fact_order, plan_trials
from kdel.delete import EditContext, get_method
from kdel.facts import FactTable
from kdel.forget.apply import apply_forget
from kdel.models.loading import load_model_for_table
from kdel.models.scoring import score_targets

@pytest.fixture(scope="module")
def loaded(tiny_kg, trained_model_dir):
    table = FactTable.from_kg(tiny_kg)
    model, tok = load_model_for_table(trained_model_dir, table)
    base = BaseScores.compute(model, tok, table, table.unrelated_sample(30, 0))
    return model, tok, table, base


def _spec(order="random", n=4, every=1, seed=0):
    cfg = SequentialConfig(n_steps=n, orders=(order,), trials=1, every=every, seed=seed)
    return plan_trials(cfg)[0]


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_sequential_handle_reverts_every_step_bit_for_bit(loaded):
    model, tok, table, base = loaded
    before = _snapshot(model)
    facts = [table.fact(i) for i in fact_order(table, np.flatnonzero(base.canonical_recalled()), "random", 4, 0)]
    edit = apply_forget(get_method("rome"), EditContext(model, tok, table), facts, site="last", mode="sequential")
    assert len(edit.records) == 4 and len(edit.handle.handles) == 4
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the edits changed no weight"
    # ||ΣΔW|| is the distance from the original weights, not the sum of the steps' norms
    direct = float(sum(((model.state_dict()[k].double() - before[k].double()) ** 2).sum() for k in changed) ** 0.5)
    assert edit.cumulative.total() == pytest.approx(direct, rel=1e-9)
    assert edit.cumulative.total() <= sum(r.total_delta_norm for r in edit.records) + 1e-9
    edit.handle.revert()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_trial_checkpoints_match_an_independent_recomputation(loaded):
    model, tok, table, base = loaded
    before = _snapshot(model)
    runner = TrialRunner(model, tok, table, base)
    spec = _spec("degree-high", n=4)
    res = runner.run(spec)
    assert res["status"] == "ok" and res["revert_verified"]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert [p["step"] for p in res["checkpoints"]] == [0, 1, 2, 3, 4]
    last = res["checkpoints"][-1]
    assert last["cum_delta_norm"] > 0
    # redo the same four edits directly and score every canonical prompt
    facts = [table.fact(i) for i in res["order"]]
    edit = apply_forget(get_method("rome"), EditContext(model, tok, table, unrelated_pool=base.unrelated_pool),
                        facts, site="last", mode="sequential")
    try:
        now = score_targets(model, tok, [f.prompt for f in table.facts], [f.target for f in table.facts]).recalled
        cum = edit.cumulative.total()
    finally:
        edit.handle.revert()
    recalled = base.canonical_recalled()
    deleted = np.zeros(len(table), bool)
    deleted[res["order"]] = True
    keep = recalled & ~deleted
    assert last["global_acc"] == pytest.approx(now[keep].mean())
    assert last["global_acc_all"] == pytest.approx(now.mean())
    assert last["deleted_recall"] == pytest.approx(now[res["order"]].mean())
    assert last["cum_delta_norm"] == pytest.approx(cum, rel=1e-9)
    assert sum(g["n"] for g in last["groups"].values()) <= keep.sum()
    assert [s["erased"] for s in res["steps"]][-1] == (not now[res["order"][-1]])


@pytest.mark.slow
def test_measuring_every_step_does_not_change_the_edits(loaded):
    model, tok, table, base = loaded
    runner = TrialRunner(model, tok, table, base)
    every1 = runner.run(_spec("random", n=4, every=1))
    every2 = runner.run(_spec("random", n=4, every=2))
    assert [p["step"] for p in every2["checkpoints"]] == [0, 2, 4]
    at = {p["step"]: p for p in every1["checkpoints"]}
    for p in every2["checkpoints"]:
        q = at[p["step"]]
        assert p["global_acc"] == q["global_acc"] and p["cum_delta_norm"] == q["cum_delta_norm"]
        assert p["groups"] == q["groups"]
    assert [s["delta_norm"] for s in every1["steps"]] == [s["delta_norm"] for s in every2["steps"]]


def test_memit_trial_pins_the_unedited_models_key_statistics(loaded, monkeypatch):
    """Every step of a sequential MEMIT trial uses C computed on the unedited model (as the reference code,
    which computes it once per layer): no key-statistics pass runs after the trial's first edit."""
    import kdel.delete.covariance as cov
    from kdel.delete.keystats_cache import clear_memory_cache

    model, tok, table, base = loaded
    clear_memory_cache()
    cfg = SequentialConfig(n_steps=3, orders=("random",), trials=1, every=1, methods=("memit",), sites=("last",),
                           layers=(1,))
    spec = plan_trials(cfg)[0]
    adapter = EditContext(model, tok, table).adapter
    fresh = {layer: cov.key_statistics(adapter, tok, table, layer).C.clone() for layer in (0, 1, 2)}
    clear_memory_cache()
    passes = []
    real = cov.second_moments

    def counting(adapter, ids, layers, *a, **k):
        passes.append((tuple(layers), model_edited()))
        return real(adapter, ids, layers, *a, **k)

    before = _snapshot(model)

    def model_edited():
        return any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())

    used = []
    memit_cls = type(get_method("memit"))
    real_solve = memit_cls.solve_update

    def recording(self, ctx, layer, resid, K, stats):
        used.append((layer, stats.C.clone()))
        return real_solve(self, ctx, layer, resid, K, stats)

    monkeypatch.setattr(cov, "second_moments", counting)
    monkeypatch.setattr(memit_cls, "solve_update", recording)
    res = TrialRunner(model, tok, table, base).run(spec)
    assert res["status"] == "ok" and res["revert_verified"], res.get("error")
    assert passes and not any(edited for _, edited in passes), passes  # statistics only before the first edit
    assert len(used) == 3 * len({layer for layer, _ in used})  # every layer of the window at every step
    for layer, C in used:
        assert torch.allclose(C, fresh[layer], rtol=0, atol=1e-12)
