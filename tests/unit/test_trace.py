"""Causal tracing: the batched tracer equals ROME's per-site loop, and the invariants of patching hold."""

from __future__ import annotations

import numpy as np
import pytest

from kdel.errors import UserError
from kdel.facts import Fact, FactTable
from kdel.trace import TraceConfig, hase_tracing_effect, load_traces, save_traces, trace_fact
from kdel.trace.corrupt import gn_corruption, str_corruption, subject_token_positions
from kdel.trace.dispatch import patched_metrics
from kdel.trace.patch import Site, build_setup, window_layers
from kdel.models.adapter import ModelAdapter

FACTS = [
    Fact(0, "Maria Lopez", "John Smith", "works_with", ("Maria Lopez works with",)),
    Fact(1, "John Smith", "Ann Lee", "works_with", ("John Smith works with",)),
    Fact(2, "Peter Pan", "London", "works_with", ("Peter Pan works with",)),
    Fact(3, "Ann Lee", "Rome", "born_in", ("Ann Lee was born in",)),
]
TABLE = FactTable(FACTS, "facts", "test")


def _max_diff(a, b) -> float:
    return max(float(np.abs(a.patched[c][m] - b.patched[c][m]).max()) for c in a.patched for m in a.patched[c])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("corruption", ["gn", "str"])
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_batched_equals_loop(random_model, family, corruption, direction):
    model, tok = random_model(family)
    model.double()
    kw = dict(corruption=corruption, direction=direction, noise_samples=4, window=3)
    fast = trace_fact(model, tok, FACTS[0], TABLE, TraceConfig(batched=True, **kw))
    slow = trace_fact(model, tok, FACTS[0], TABLE, TraceConfig(batched=False, **kw))
    assert set(fast.patched) == {"resid", "mlp", "attn"}
    assert fast.patched["mlp"]["prob"].shape == (3, len(fast.tokens))
    assert _max_diff(fast, slow) < 1e-5
    # the maps are not trivially constant: some site moves the metric
    assert np.ptp(fast.patched["resid"]["logprob"]) > 1e-6


def test_batched_equals_loop_neox_multi_position(random_model):
    model, tok = random_model("gpt_neox")
    model.double()
    adapter = ModelAdapter(model, tok)
    setup = build_setup(adapter, gn_corruption(tok, FACTS[0], adapter.embedding_matrix(), 3, 3.0, 0), "denoise")
    sites = [Site("mlp", (0, 1), (1, 2)), Site("attn", (2,), (3, 4)), Site("resid", (1,), (2, 4))]
    a = patched_metrics(setup, sites, batched=True)
    b = patched_metrics(setup, sites, batched=False)
    for x, y in zip(a, b):
        assert all(abs(x[m] - y[m]) < 1e-5 for m in x)


@pytest.mark.parametrize("corruption", ["gn", "str"])
def test_restoring_last_layer_last_position_gives_one(random_model, corruption):
    model, tok = random_model("gpt2")
    model.double()
    t = trace_fact(model, tok, FACTS[0], TABLE, TraceConfig(corruption=corruption, components=("resid",)))
    assert t.clean["prob"] != t.corrupted["prob"]
    for m in ("prob", "logprob", "logit_diff", "kl"):
        assert t.normalized("resid", m)[-1, t.last] == pytest.approx(1.0, abs=1e-9)


def test_restoring_first_block_output_from_the_subject_on_gives_one(random_model):
    """gn noises only the subject embeddings, so after block 0 the corruption lives at the subject positions and
    (through attention) at every later position: restoring block 0's output there restores the clean run.
    Restoring the subject positions alone does not, since block 0's attention already moved noise forward."""
    model, tok = random_model("llama")
    model.double()
    adapter = ModelAdapter(model, tok)
    corr = gn_corruption(tok, FACTS[0], adapter.embedding_matrix(), 5, 3.0, 0)
    setup = build_setup(adapter, corr, "denoise")
    reach = tuple(range(min(corr.clean.subject_positions), len(corr.clean.ids)))
    subject_only = tuple(corr.clean.subject_positions)
    for batched in (True, False):
        full, part = patched_metrics(setup, [Site("resid", (0,), reach), Site("resid", (0,), subject_only)],
                                     batched=batched)
        for m in ("prob", "logit_diff"):
            eff = (full[m] - setup.corrupted[m]) / (setup.clean[m] - setup.corrupted[m])
            assert eff == pytest.approx(1.0, abs=1e-9)
        assert abs(part["prob"] - setup.clean["prob"]) > 1e-9


def test_patching_clean_into_clean_changes_nothing(random_model):
    model, tok = random_model("gpt2")
    model.double()
    adapter = ModelAdapter(model, tok)
    corr = gn_corruption(tok, FACTS[0], adapter.embedding_matrix(), 2, 3.0, 0)
    corr.corrupted = corr.clean  # source and base are the same clean run
    setup = build_setup(adapter, corr, "noise")
    T = len(corr.clean.ids)
    sites = [Site(c, (layer,), (p,)) for c in ("resid", "mlp", "attn") for layer in range(3) for p in range(T)]
    for batched in (True, False):
        for v in patched_metrics(setup, sites, batched=batched):
            assert v["prob"] == pytest.approx(setup.clean["prob"], abs=1e-12)
            assert abs(v["kl"]) < 1e-12


def test_gn_is_reproducible_and_seed_dependent(random_model):
    model, tok = random_model("gpt2")
    cfg = TraceConfig(components=("mlp",), noise_samples=3)
    a = trace_fact(model, tok, FACTS[0], TABLE, cfg)
    b = trace_fact(model, tok, FACTS[0], TABLE, cfg)
    c = trace_fact(model, tok, FACTS[0], TABLE, TraceConfig(components=("mlp",), noise_samples=3, seed=1))
    assert np.array_equal(a.patched["mlp"]["prob"], b.patched["mlp"]["prob"])
    assert a.corrupted == b.corrupted
    assert a.corrupted["prob"] != c.corrupted["prob"]


def test_subject_positions_and_str_partner(random_model):
    _, tok = random_model("gpt2")
    assert subject_token_positions(tok, "Maria Lopez works with", "Maria Lopez") == [1, 2]
    assert subject_token_positions(tok, "the capital city of Peter Pan is", "Peter Pan") == [5, 6]
    with pytest.raises(UserError, match="does not occur"):
        subject_token_positions(tok, "Maria Lopez works with", "Ann Lee")
    corr = str_corruption(tok, FACTS[0], TABLE, seed=0)
    assert corr.partner_fact_id in (1, 2)  # same relation, other subject, other object
    assert len(corr.corrupted.ids) == len(corr.clean.ids)
    assert corr.alt_id != corr.target_id
    with pytest.raises(UserError, match="no STR partner"):
        str_corruption(tok, FACTS[3], TABLE, seed=0)  # the only fact of its relation


def test_str_fallback_and_window_errors(random_model):
    model, tok = random_model("gpt2")
    with pytest.raises(UserError, match="fallback-gn"):
        trace_fact(model, tok, FACTS[3], TABLE, TraceConfig(corruption="str"))
    t = trace_fact(model, tok, FACTS[3], TABLE, TraceConfig(corruption="str", fallback_to_gn=True,
                                                             components=("mlp",)))
    assert t.config.corruption == "gn" and t.notes
    with pytest.raises(UserError, match="larger than the model"):
        trace_fact(model, tok, FACTS[0], TABLE, TraceConfig(window=4))
    assert window_layers(0, 5, 3) == (0, 1, 2)
    assert window_layers(5, 10, 12) == tuple(range(0, 10))
    assert window_layers(2, 3, 12) == (1, 2, 3)


def test_effects_peak_hase_and_roundtrip(random_model, tmp_path):
    model, tok = random_model("gpt2")
    model.double()
    t = trace_fact(model, tok, FACTS[0], TABLE, TraceConfig(noise_samples=3, window=3))
    ie = t.indirect_effect("mlp")
    assert np.allclose(ie, t.patched["mlp"]["prob"] - t.corrupted["prob"])
    prof = t.layer_profile("mlp", "prob", t.last_subject)
    gap = t.clean["prob"] - t.corrupted["prob"]
    assert t.peak_layer("subject_last") == int(np.argmax(prof))
    h = hase_tracing_effect(t, 1)
    expect = max(0.0, float(np.max((t.patched["mlp"]["prob"][1] - t.corrupted["prob"]) / abs(gap))))
    assert h == pytest.approx(expect)
    save_traces([t], tmp_path / "tr", plots=True)
    assert len(list((tmp_path / "tr" / "heatmaps").glob("*.png"))) == 3
    (u,) = load_traces(tmp_path / "tr")
    assert u.tokens == t.tokens and u.config == t.config and u.clean == t.clean
    assert np.array_equal(u.patched["attn"]["kl"], t.patched["attn"]["kl"])
    with pytest.raises(UserError, match="not a trace directory"):
        load_traces(tmp_path)
