"""Heatmaps: a diverging colormap centred at 0 for maps with negative cells, readable token labels."""

from __future__ import annotations

import numpy as np

from kdel.facts import Fact, FactTable
from kdel.trace import TraceConfig, trace_many
from kdel.trace.plots import color_scale, display_token, save_heatmaps


def test_display_token():
    assert display_token("Ġcapital") == "␣capital"
    assert display_token("▁Paris") == "␣Paris"
    assert display_token("Ċ") == "↵" and display_token("<0x0A>") == "↵"
    assert display_token("Maria") == "Maria" and display_token("") == "∅"


def test_color_scale():
    neg = np.array([[0.5, -0.2], [0.1, np.nan]])
    assert color_scale(neg, "mlp") == {"cmap": "RdBu_r", "vmin": -0.5, "vmax": 0.5}  # centred at 0
    pos = np.array([[0.5, 0.2], [0.0, 0.8]])
    assert color_scale(pos, "mlp") == {"cmap": "Greens", "vmin": 0.0, "vmax": 0.8}
    assert color_scale(np.full((2, 2), np.nan), "attn")["vmax"] == 1.0


def test_heatmaps_of_exact_partial_and_approximate_traces(random_model, tmp_path):
    model, tok = random_model("gpt2")
    facts = [Fact(0, "Maria Lopez", "John Smith", None, ("Maria Lopez works with",))]
    table = FactTable(facts, "facts", "test")
    for i, cfg in enumerate([TraceConfig(noise_samples=2, positions=("subject_last", "last")),
                             TraceConfig(noise_samples=2, method="attribution", window=2)]):
        (t,) = trace_many(model, tok, facts, table, cfg)
        paths = save_heatmaps(t, tmp_path / str(i))
        assert len(paths) == 3 and all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
