"""`kdel trace` end to end on a saved random model and a facts file: outputs, and bad input exits 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kdel.cli.main import main
from kdel.trace import load_traces

LINES = [
    {"subject": "Maria Lopez", "prompt": "Maria Lopez works with", "target": "John Smith", "relation": "works_with"},
    {"subject": "John Smith", "prompt": "John Smith works with", "target": "Ann Lee", "relation": "works_with"},
    {"subject": "Ann Lee", "prompt": "Ann Lee was born in", "target": "Rome", "relation": "born_in"},
]


def _one_error_line(err: str) -> bool:
    """Exactly one `kdel: error:` line (model loading may print its own progress bar)."""
    return err.count("kdel: error:") == 1 and err.rstrip().splitlines()[-1].count("kdel: error:") <= 1


@pytest.fixture
def setup(random_model_dir, tmp_path):
    facts = tmp_path / "facts.jsonl"
    facts.write_text("".join(json.dumps(r) + "\n" for r in LINES))
    return random_model_dir("gpt2"), facts


def test_cli_trace_writes_traces(setup, tmp_path, capsys):
    model, facts = setup
    out = tmp_path / "tr"
    # a random model recalls nothing: skipping every fact leaves nothing to trace; --strict names the first
    rc = main(["trace", "--model", str(model), "--facts", str(facts), "--out", str(out), "--limit", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "recalls none" in err
    rc = main(["trace", "--model", str(model), "--facts", str(facts), "--out", str(out), "--strict"])
    err = capsys.readouterr().err
    assert rc == 2 and "does not recall fact 0" in err and _one_error_line(err)


def test_cli_trace_known_facts(setup, tmp_path, capsys, monkeypatch):
    import kdel.trace.api as api

    model, facts = setup
    monkeypatch.setattr(api, "known_mask", lambda m, t, fs: np.array([f.id != 1 for f in fs]))
    out = tmp_path / "tr"
    rc = main(["trace", "--model", str(model), "--facts", str(facts), "--out", str(out), "--component", "mlp",
               "--metric", "prob", "--metric", "kl", "--corruption", "str", "--fallback-gn", "--plots",
               "--noise-samples", "2", "--window", "3"])
    assert rc == 0, capsys.readouterr().err
    traces = load_traces(out)
    assert [t.fact_id for t in traces] == [0, 2]
    assert traces[0].config.corruption == "str" and traces[1].config.corruption == "gn"
    assert set(traces[0].patched) == {"mlp"} and set(traces[0].patched["mlp"]) == {"prob", "kl"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_unknown"] == [1] and summary["fallbacks_to_gn"] == [2]
    assert len(list((out / "heatmaps").glob("*.png"))) == 2
    assert "kdel: warning: skipping 1 facts" in capsys.readouterr().err
    rc = main(["trace", "--model", str(model), "--facts", str(facts), "--out", str(out), "--corruption", "str",
               "--fact", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "no STR partner" in err and _one_error_line(err)
    assert len(load_traces(out)) == 2  # the failed run left the old traces in place


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--window", "9"], "larger than the model"),
        (["--corruption", "xx"], "unknown corruption"),
        (["--component", "head"], "unknown component"),
        (["--fact", "7"], "does not exist"),
    ],
)
def test_cli_trace_bad_input(setup, tmp_path, capsys, extra, message):
    model, facts = setup
    rc = main(["trace", "--model", str(model), "--facts", str(facts), "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and _one_error_line(err)


def test_cli_trace_subject_not_in_prompt(random_model_dir, tmp_path, capsys, monkeypatch):
    import kdel.trace.api as api
    from kdel.facts import Fact, FactTable

    monkeypatch.setattr(api, "known_mask", lambda m, t, fs: np.ones(len(fs), dtype=bool))
    model, tok = __import__("tests.conftest", fromlist=["x"]).build_random_model("gpt2")
    table = FactTable([Fact(0, "Ann Lee", "Rome", None, ("Maria Lopez works with",))], "facts", "x")
    from kdel.errors import UserError

    with pytest.raises(UserError, match="does not occur in the prompt"):
        api.trace_facts(model, tok, table.facts, table, api.TraceConfig(), progress=False)
