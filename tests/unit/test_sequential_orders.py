"""Deletion orders, the trial plan, mean curves with t bands on planted trials, and the resume scan of unit
files (no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from kdel.audit.resume import fingerprint, scan_units, settle, unit_id, write_unit
from kdel.audit.sequential import ORDERS, SequentialConfig, fact_order, plan_trials
from kdel.audit.sequential_curves import band, condition_curves, first_below
from kdel.errors import UserError
from kdel.facts import FactTable


@pytest.fixture(scope="module")
def table(tiny_kg):
    return FactTable.from_kg(tiny_kg)


def test_degree_orders_sort_by_subject_degree(table):
    ids = list(range(len(table)))
    high = fact_order(table, ids, "degree-high", 20, seed=0)
    low = fact_order(table, ids, "degree-low", 20, seed=0)
    deg = [table.fact(i).subject_popularity for i in high]
    assert deg == sorted(deg, reverse=True) and deg[0] == max(f.subject_popularity for f in table.facts)
    deg = [table.fact(i).subject_popularity for i in low]
    assert deg == sorted(deg) and deg[0] == min(f.subject_popularity for f in table.facts)
    # ties are broken by the seed: another seed, same degrees, maybe another order
    other = fact_order(table, ids, "degree-high", 20, seed=1)
    assert [table.fact(i).subject_popularity for i in other] == [table.fact(i).subject_popularity for i in high]


@pytest.mark.parametrize("order", ORDERS)
def test_every_order_is_a_seeded_selection_of_eligible_facts(table, order):
    eligible = list(range(0, len(table), 2))
    a = fact_order(table, eligible, order, 15, seed=3)
    assert a == fact_order(table, eligible, order, 15, seed=3)
    assert len(a) == len(set(a)) == 15 and set(a) <= set(eligible)
    with pytest.raises(UserError, match="recalls before any edit"):
        fact_order(table, eligible, order, len(eligible) + 1, seed=0)


def test_random_orders_differ_by_seed(table):
    ids = list(range(len(table)))
    assert fact_order(table, ids, "random", 30, 0) != fact_order(table, ids, "random", 30, 1)


def test_same_subject_keeps_a_subject_s_facts_together(table):
    order = fact_order(table, list(range(len(table))), "same-subject", len(table), seed=0)
    subjects = [table.fact(i).subject for i in order]
    runs = [s for k, s in enumerate(subjects) if k == 0 or s != subjects[k - 1]]
    assert len(runs) == len(set(subjects))  # each subject appears as one contiguous run


def test_hop_order_walks_the_graph_breadth_first(table):
    order = fact_order(table, list(range(len(table))), "hop", len(table), seed=0)
    subjects = []
    for i in order:
        s = table.fact(i).subject
        if s not in subjects:
            subjects.append(s)
    dist = table.probe_index.distances_from(subjects[0], 50)
    # breadth first from the start: distances never decrease within the start's component
    ds = [dist[s] for s in subjects if s in dist]
    assert ds == sorted(ds)


def test_plan_trials_dedupes_sites_for_methods_without_one():
    cfg = SequentialConfig(n_steps=5, orders=("random", "degree-high"), trials=2, methods=("rome", "npo"),
                           sites=("last", "subject_last"))
    specs = plan_trials(cfg)
    rome = [s for s in specs if s["method"] == "rome"]
    npo = [s for s in specs if s["method"] == "npo"]
    assert len(rome) == 2 * 2 * 2 and len(npo) == 2 * 2
    assert len({s["id"] for s in specs}) == len(specs)
    assert {s["seed"] for s in rome} == {0, 1}
    assert plan_trials(cfg) == specs
    cfg.validate()
    for bad in (dict(n_steps=0), dict(orders=("sideways",)), dict(trials=0), dict(every=0),
                dict(objective="replace")):
        with pytest.raises(UserError):
            SequentialConfig(**{**dict(n_steps=5), **bad}).validate()


def test_band_is_the_t_interval_of_the_mean():
    x = [0.9, 0.8, 0.95, 0.7]
    b = band(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert b["mean"] == pytest.approx(np.mean(x)) and b["lo"] == pytest.approx(lo) and b["hi"] == pytest.approx(hi)
    assert band([0.5, None, float("nan")]) == {"mean": 0.5, "lo": None, "hi": None, "n": 1}
    assert band([0.99, 0.2], bounds=(0, 1))["hi"] == 1.0


def _trial(tid, order, trial, accs, status="ok"):
    pts = [{"step": s, "global_acc": a, "groups": {"unrelated": {"n": 5, "acc": a}}, "cum_delta_norm": float(s)}
           for s, a in enumerate(accs)]
    return {"id": tid, "status": status, "checkpoints": pts,
            "spec": {"method": "rome", "site": "last", "layer": None, "order": order, "trial": trial}}


def test_condition_curves_on_planted_trials():
    trials = [_trial("a", "random", 0, [1.0, 0.95, 0.85, 0.8]), _trial("b", "random", 1, [1.0, 0.97, 0.91, 0.88]),
              _trial("c", "random", 2, [1.0, 0.93, 0.86, 0.7]), _trial("d", "degree-high", 0, [1.0, 0.99, 0.98, 0.97])]
    curves = condition_curves(trials)
    assert [c["order"] for c in curves] == ["degree-high", "random"]
    rnd = curves[1]
    assert rnd["n_trials"] == 3 and rnd["steps"] == [0, 1, 2, 3]
    assert rnd["metrics"]["global_acc"]["mean"][2] == pytest.approx((0.85 + 0.91 + 0.86) / 3)
    assert rnd["metrics"]["groups.unrelated"]["mean"][3] == pytest.approx((0.8 + 0.88 + 0.7) / 3)
    assert rnd["below"]["per_trial"] == [2, 3, 2]
    assert rnd["below"]["mean_curve"] == 2  # mean 0.873 at step 2
    assert rnd["below"]["band_earliest"] <= rnd["below"]["mean_curve"]
    assert rnd["below"]["trials_mean"]["mean"] == pytest.approx(7 / 3)
    hi = curves[0]
    assert hi["below"]["per_trial"] == [None] and hi["below"]["n_never"] == 1 and hi["below"]["mean_curve"] is None
    assert first_below(trials[0]["checkpoints"], 0.96) == 1


def test_unit_files_resume_by_fingerprint(tmp_path):
    spec = {"method": "rome", "order": "random"}
    uid = unit_id(spec)
    fp = fingerprint({"model": "m1", "spec": spec})
    d = tmp_path / "trials"
    scan = scan_units(d, {uid: fp}, "fmt/1")
    assert scan.todo == [uid] and not scan.done
    write_unit(d, {"format": "fmt/1", "id": uid, "fingerprint": fp, "value": 1})
    stamp = (d / f"{uid}.json").stat().st_mtime_ns
    scan = scan_units(d, {uid: fp}, "fmt/1")
    assert list(scan.done) == [uid] and scan.todo == []
    # other settings: recomputed, the old file kept in superseded/
    fp2 = fingerprint({"model": "m2", "spec": spec})
    scan = scan_units(d, {uid: fp2}, "fmt/1")
    assert scan.todo == [uid] and scan.stale and scan.stale[0][1] == ['model "m1" -> "m2"']
    with pytest.raises(UserError, match="--no-recompute"):
        settle(scan, tmp_path / "superseded", recompute=False)
    assert (d / f"{uid}.json").stat().st_mtime_ns == stamp
    with pytest.warns(UserWarning, match="other settings"):
        settle(scan, tmp_path / "superseded", recompute=True)
    assert not (d / f"{uid}.json").exists() and (tmp_path / "superseded" / f"{uid}.json").exists()
    # a truncated file is invalid: recomputed
    (d / f"{uid}.json").write_text(json.dumps({"format": "fmt/1", "id": uid})[:-3])
    scan = scan_units(d, {uid: fp2}, "fmt/1")
    assert scan.todo == [uid] and "unreadable" in scan.invalid[0][1]
