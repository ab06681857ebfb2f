"""experiments/bench/deletion.py --resume keeps only what the same command, facts and clean commit finished."""

from __future__ import annotations

import pytest

from tests.experiment_modules import load

pytestmark = pytest.mark.unit


def _bench():
    return load("experiments/bench/deletion.py", "bench_deletion")


def _results(commit="a" * 40, dirty=False, command="python experiments/bench/deletion.py --n 5", calib=(1, 2)):
    return {"command": command, "provenance": {"git_commit": commit, "git_dirty": dirty},
            "calibration_ids": list(calib), "evaluation_ids": [3, 4],
            "methods": {"rome": {"evaluation": {}}, "ga": {"error": "boom"}, "npo": {"evaluation": {}}}}


def test_resume_keeps_finished_methods_of_the_same_run_only():
    finished = _bench().finished_methods
    new = _results()
    assert set(finished(_results(), new, ["rome", "ga", "npo"])) == {"rome", "npo"}  # the failed one reruns
    assert set(finished(_results(), new, ["rome"])) == {"rome"}  # only the methods asked for
    for other in (_results(commit="b" * 40), _results(dirty=True), _results(command="python x --n 6"),
                  _results(calib=(1, 9))):
        assert finished(other, new, ["rome", "npo"]) == {}
    assert finished(_results(), _results(dirty=True), ["rome"]) == {}  # this run's code is not the commit's
