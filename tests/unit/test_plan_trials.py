"""The trial rule of `kdel plan` (kdel.risk.trial.run_trials): which measured candidate it keeps."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kdel.errors import UserError
from kdel.risk.trial import run_trials


class _Cases:
    """Stands in for PlanCases: each candidate key's audit outcome is given."""

    def __init__(self, outcomes):
        self.outcomes, self.ran = outcomes, []

    def spec(self, cand):
        return cand["key"]

    def executor(self):
        return self

    def run(self, key):
        self.ran.append(key)
        o = self.outcomes[key]
        if o == "error":
            return SimpleNamespace(status="error", error="boom", revert_verified=None)
        success, wrecked, flips, drop = o
        return SimpleNamespace(status="ok", error=None, success=success, wrecked=wrecked, revert_verified=True,
                               global_=SimpleNamespace(n_flipped_excluding_target=flips,
                                                       mean_p_drop_excluding_target=drop, acc_drop=flips / 100))


def _plan(keys, objective="p_drop"):
    cands = [{"key": k} for k in keys]
    return {"candidates": cands, "chosen": cands[0], "objective": objective}


def test_the_least_measured_collateral_among_erasing_unwrecked_trials_is_kept():
    outcomes = {"a": (True, False, 2, 0.010), "b": (True, True, 0, 0.001),  # b wrecked the model
                "c": (True, False, 1, 0.004), "d": (False, False, 0, 0.0)}  # d did not erase
    cases = _Cases(outcomes)
    out = run_trials(cases, _plan("abcde"), 4)
    assert cases.ran == list("abcd")  # the first k in the plan's order, no more
    assert out["chosen"]["key"] == "c" and out["predicted_choice"] == "a" and out["chosen_by"].startswith("trial")
    assert [t["eligible"] for t in out["trials"]] == [True, False, True, False]
    # the flips objective orders the measured numbers by flips first
    outcomes["c"] = (True, False, 3, 0.004)
    assert run_trials(_Cases(outcomes), _plan("abcd", "flips"), 4)["chosen"]["key"] == "a"
    assert run_trials(_Cases(outcomes), _plan("abcd"), 4)["chosen"]["key"] == "c"


def test_without_an_erasing_trial_the_predicted_choice_stays_and_zero_trials_run_none():
    cases = _Cases({"a": (False, False, 0, 0.0), "b": "error", "c": (True, True, 9, 0.2)})
    out = run_trials(cases, _plan("abc"), 3)
    assert out["chosen"]["key"] == "a" and out["chosen_by"].startswith("prediction (no trial")
    assert out["trials"][1]["status"] == "error" and not out["trials"][1]["eligible"]
    none = _Cases({})
    out = run_trials(none, _plan("abc"), 0)
    assert none.ran == [] and out["trials"] == [] and out["chosen_by"] == "prediction"


def test_a_trial_that_cannot_be_reverted_stops_the_plan():
    class Unreverted(_Cases):
        def run(self, key):
            rec = super().run(key)
            rec.revert_verified = False
            return rec

    with pytest.raises(UserError, match="could not be reverted"):
        run_trials(Unreverted({"a": (True, False, 0, 0.0)}), _plan("a"), 1)
