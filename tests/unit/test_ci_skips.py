"""CI's rule: with KDEL_CI=1 (set by .ci/run) a skipped test fails, unless it is marked `ci_may_skip`; without it,
skips stay skips. This is what makes CI fail when the Ray or browser test could not run."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.integration  # two pytest subprocesses: over the unit budget

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
TESTS = '''
import pytest

def test_needs_a_browser():
    pytest.skip("chromium is not installed")

@pytest.mark.ci_may_skip
def test_skips_by_design():
    pytest.skip("this machine has CUDA")

def test_runs():
    import json

    assert json.loads('[1, 2]') == [1, 2]
'''


def _run(pytester, monkeypatch, ci: str | None):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_skips=TESTS)
    pytester.makeini("[pytest]\nmarkers =\n    ci_may_skip: x\n    unit: x\n    integration: x\n    acceptance: x\n")
    if ci is None:
        monkeypatch.delenv("KDEL_CI", raising=False)
    else:
        monkeypatch.setenv("KDEL_CI", ci)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider")


def test_a_skip_fails_in_ci(pytester, monkeypatch):
    res = _run(pytester, monkeypatch, "1")
    res.assert_outcomes(passed=1, failed=1, skipped=1)
    res.stdout.fnmatch_lines(["*skipped in CI*chromium is not installed*"])


def test_outside_ci_a_skip_is_a_skip(pytester, monkeypatch):
    _run(pytester, monkeypatch, None).assert_outcomes(passed=1, skipped=2)
