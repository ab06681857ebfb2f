"""Trace files: peaks carry effect sizes; files written before the new fields still load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kdel.facts import Fact, FactTable
from kdel.trace import TraceConfig, load_traces, save_traces, trace_many

FACTS = [Fact(0, "Maria Lopez", "John Smith", None, ("Maria Lopez works with",)),
         Fact(1, "Peter Pan", "London", None, ("the capital city of Peter Pan is",))]
TABLE = FactTable(FACTS, "facts", "test")


def test_peak_effect_sizes_and_old_files(random_model, tmp_path):
    model, tok = random_model("gpt2")
    model.double()
    traces = trace_many(model, tok, FACTS, TABLE, TraceConfig(noise_samples=2, components=("mlp",), window=2))
    save_traces(traces, tmp_path / "tr")
    lines = [json.loads(x) for x in (tmp_path / "tr" / "traces.jsonl").read_text().splitlines()]
    for t, row in zip(traces, lines):
        for site in ("subject_last", "last"):
            eff = t.normalized("mlp", "prob")[:, t.position(site)]
            order = np.argsort(-eff, kind="stable")
            peak = row["peak"][site]
            assert peak["layer"] == row["peak_layer"][site] == int(order[0])
            assert peak["effect"] == pytest.approx(eff[order[0]], abs=1e-6)
            assert peak["runner_up_layer"] == int(order[1])
            assert peak["runner_up_effect"] == pytest.approx(eff[order[1]], abs=1e-6)
            assert (peak["component"], peak["metric"], peak["window"]) == ("mlp", "prob", 2)
        assert row["method"] == "exact" and row["approximate"] is False
    # a file from before these fields: no peak, method, approximate, config method/positions
    for row in lines:
        for k in ("peak", "method", "approximate"):
            row.pop(k)
        row["config"].pop("method")
        row["config"].pop("positions")
    (tmp_path / "tr" / "traces.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    old = load_traces(tmp_path / "tr")
    assert [t.config.method for t in old] == ["exact", "exact"] and old[0].config.positions == ()
    assert old[1].peak("last") == traces[1].peak("last")
