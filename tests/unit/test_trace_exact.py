"""The fast exact tracer equals ROME's per-site loop (float64, 1e-5) on GPT-2, Llama and NeoX, for many facts
of different lengths at once, both directions, both corruptions, windows, arbitrary sites and positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdel.errors import UserError
from kdel.facts import Fact, FactTable
from kdel.models.adapter import ModelAdapter
from kdel.trace import TraceConfig, trace_many
from kdel.trace.api import _corruption
from kdel.trace.engine import run_sites
from kdel.trace.dispatch import trace_loop
from kdel.trace.patch import Site, build_setups

# prompts of lengths 5..8 with the subject at the start, in the middle and near the end (vocabulary of conftest)
FACTS = [
    Fact(0, "Maria Lopez", "John Smith", None, ("Maria Lopez works with",)),
    Fact(1, "John Smith", "Ann Lee", None, ("John Smith is a colleague of",)),
    Fact(2, "Peter Pan", "London", None, ("the capital city of Peter Pan is",)),
    Fact(3, "Ann Lee", "Rome", None, ("Ann Lee was born in",)),
]
TABLE = FactTable(FACTS, "facts", "test")


def _max_diff(a, b) -> float:
    return max(float(np.nanmax(np.abs(a.patched[c][m] - b.patched[c][m]))) for c in a.patched for m in a.patched[c])


def _both(model, tok, **kw):
    fast = trace_many(model, tok, FACTS, TABLE, TraceConfig(batched=True, **kw))
    slow = trace_many(model, tok, FACTS, TABLE, TraceConfig(batched=False, **kw))
    return fast, slow


FAST = {("gpt2", "denoise", "gn"), ("llama", "noise", "str"), ("gpt_neox", "noise", "gn")}
MATRIX = [pytest.param(f, d, c, marks=() if (f, d, c) in FAST else pytest.mark.slow)
          for f in ("gpt2", "llama", "gpt_neox") for d in ("denoise", "noise") for c in ("gn", "str")]


@pytest.mark.parametrize("family,direction,corruption", MATRIX)
def test_many_facts_equal_loop(random_model, family, direction, corruption, monkeypatch):
    import kdel.trace.engine as engine

    model, tok = random_model(family)
    model.double()
    if family == "llama":  # merge every batch up to one per layer (padded prefixes of different lengths)
        monkeypatch.setattr(engine, "min_tokens_for", lambda adapter: 10**6)
    fast, slow = _both(model, tok, corruption=corruption, direction=direction, noise_samples=3, window=2)
    assert [t.fact_id for t in fast] == [0, 1, 2, 3]
    assert len({len(t.tokens) for t in fast}) == 4  # four prompt lengths in one batch
    for a, b in zip(fast, slow):
        assert a.clean == pytest.approx(b.clean, abs=1e-12) and a.corrupted == pytest.approx(b.corrupted, abs=1e-12)
        assert _max_diff(a, b) < 1e-5
        assert np.ptp(a.patched["resid"]["logprob"]) > 1e-6  # some site moves the metric


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["gqa", "neox_sequential", "window3"])
def test_other_shapes_equal_loop(setting):
    from tests.conftest import _word_tokenizer
    from tests.fixtures_real import build_model

    tok = _word_tokenizer()
    family = {"gqa": "llama", "neox_sequential": "gpt_neox", "window3": "gpt2"}[setting]
    model = build_model(family, len(tok), tok, n_layers=4, d_model=32, kv_heads=2).eval().double()
    if setting == "neox_sequential":
        model.config.use_parallel_residual = False
        for layer in model.gpt_neox.layers:
            layer.use_parallel_residual = False
    fast, slow = _both(model, tok, noise_samples=2, window=3 if setting == "window3" else 1)
    assert max(_max_diff(a, b) for a, b in zip(fast, slow)) < 1e-5


def test_arbitrary_sites_across_facts_equal_loop(random_model):
    """Multi-layer, multi-position (non-contiguous) sites, mixed in one call over facts of different lengths."""
    model, tok = random_model("gpt2", n_layers=4)
    model.double()
    adapter = ModelAdapter(model, tok)
    corr = [_corruption(tok, f, TABLE, adapter, TraceConfig(noise_samples=3), 1.0)[0] for f in FACTS]
    setups = build_setups(adapter, corr, "denoise")
    sites = []
    for s in setups:
        T = s.length
        sites.append([Site("mlp", (0, 1), (T - 3, T - 1)), Site("attn", (2, 3), (T - 2,)),
                      Site("resid", (1,), (T - 4, T - 2)), Site("mlp", (3,), (T - 1,)), Site("attn", (3,), (1,))])
    fast = run_sites(setups, sites)
    small = run_sites(setups, sites, max_tokens=7, min_tokens=1)  # many small batches
    merged = run_sites(setups, sites, min_tokens=10**6)  # one batch per layer: rows of different lengths and starts
    for s, ss, f, g, h in zip(setups, sites, fast, small, merged):
        for x, y, z, w in zip(f, trace_loop(s, ss), g, h):
            assert all(abs(x[m] - y[m]) < 1e-5 and abs(x[m] - z[m]) < 1e-9 and abs(x[m] - w[m]) < 1e-9 for m in x)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_waves_share_block_calls_across_first_layers(random_model, family):
    """Stage 2 of every first layer runs as one wave: block j once for all sites patched before j (L - 1 calls
    for one position's MLP at every layer, instead of L(L-1)/2 per-layer batches), still equal to the loop; a
    memory cap splits the wave and changes nothing but the calls."""
    L = 6
    model, tok = random_model(family, n_layers=L)
    model.double()
    adapter = ModelAdapter(model, tok)
    corr = [_corruption(tok, f, TABLE, adapter, TraceConfig(noise_samples=3), 1.0)[0] for f in FACTS[:2]]
    setups = build_setups(adapter, corr, "denoise")
    sites = [[Site("mlp", (layer,), (s.length - 2,)) for layer in range(L)] for s in setups]
    calls = []
    handles = [adapter.layer(i).register_forward_pre_hook(lambda _m, _a, i=i: calls.append(i)) for i in range(L)]
    try:
        one = run_sites(setups, sites, min_tokens=1)
        n_one = len(calls)
        calls.clear()
        split = run_sites(setups, sites, min_tokens=1, max_tokens=2 * 12)  # a batch: 2 facts x 3 rows x 2 positions
        n_split = len(calls)
    finally:
        for h in handles:
            h.remove()
    assert n_one == L - 1  # one wave: layers 1 .. L-1 once each (the last layer's sites need no stage 2)
    assert n_split == 5 + 3 + 1  # waves of two first layers: {0, 1}, {2, 3}, {4}; per first layer: 15
    for s, ss, a, b in zip(setups, sites, one, split):
        for x, y, z in zip(a, trace_loop(s, ss), b):
            assert all(abs(x[m] - y[m]) < 1e-5 and abs(x[m] - z[m]) < 1e-12 for m in x)


def test_non_additive_block_still_equals_loop(random_model):
    """A block whose output is not input + attn + mlp (here scaled by a hook) turns off the MLP shortcut."""
    from kdel.trace.record import record_runs

    model, tok = random_model("llama")
    model.double()
    adapter = ModelAdapter(model, tok)
    corr = [_corruption(tok, f, TABLE, adapter, TraceConfig(noise_samples=2), 1.0)[0] for f in FACTS[:2]]
    assert record_runs(adapter, [c.clean for c in corr]).additive
    h = model.model.layers[1].register_forward_hook(lambda _m, _i, out: out * 1.5)
    try:
        assert not record_runs(adapter, [c.clean for c in corr]).additive
        fast, slow = (trace_many(model, tok, FACTS[:2], TABLE, TraceConfig(batched=b, noise_samples=2,
                                                                            components=("mlp",))) for b in (True, False))
    finally:
        h.remove()
    assert max(_max_diff(a, b) for a, b in zip(fast, slow)) < 1e-5


def test_positions_option(random_model):
    model, tok = random_model("gpt2")
    model.double()
    full = trace_many(model, tok, FACTS, TABLE, TraceConfig(noise_samples=2, components=("mlp",)))
    part = trace_many(model, tok, FACTS, TABLE, TraceConfig(noise_samples=2, components=("mlp",),
                                                            positions=("subject_last", "last")))
    for a, b in zip(full, part):
        cols = sorted({b.last_subject, b.last})
        assert np.allclose(a.patched["mlp"]["kl"][:, cols], b.patched["mlp"]["kl"][:, cols], atol=1e-12)
        others = [p for p in range(len(b.tokens)) if p not in cols]
        assert np.isnan(b.patched["mlp"]["kl"][:, others]).all()
        pa, pb = a.peak("last"), b.peak("last")  # the same up to float64 rounding (different batches)
        assert (pb.layer, pb.runner_up_layer) == (pa.layer, pa.runner_up_layer)
        assert np.allclose([pb.effect, pb.runner_up_effect], [pa.effect, pa.runner_up_effect], rtol=1e-12, atol=0)
    only = trace_many(model, tok, FACTS[:1], TABLE, TraceConfig(noise_samples=2, positions=("last",)))[0]
    with pytest.raises(UserError, match="did not trace"):
        only.peak_layer("subject_last")
    with pytest.raises(UserError, match="unknown position"):
        TraceConfig(positions=("middle",)).validate()


@pytest.mark.slow
def test_float32_close_to_loop(trained_model_dir, tiny_kg_dir):
    from kdel.facts import load_fact_table
    from kdel.models.loading import load_model

    table = load_fact_table(kg=tiny_kg_dir)
    model, tok = load_model(trained_model_dir, "cpu", kg_hash=table.source_hash)
    facts = table.facts[:3]
    fast = trace_many(model, tok, facts, table, TraceConfig(noise_samples=4))
    slow = trace_many(model, tok, facts, table, TraceConfig(noise_samples=4, batched=False))
    assert max(_max_diff(a, b) for a, b in zip(fast, slow)) < 1e-4
    assert torch.get_default_dtype() == torch.float32


def test_the_batches_and_so_the_results_never_depend_on_timings(random_model, monkeypatch):
    """The batch size is a fixed function of the block's size: a tracer that timed itself to size its batches
    gave results whose last bits changed with the machine's load (two runs of one audit then differed). With
    every clock raising, the tracer still runs and gives bit-identical results twice."""
    import time

    import kdel.trace.engine as engine

    def no_clock():
        raise AssertionError("the tracer read a clock")

    model, tok = random_model("gpt2")  # built (and its lazy imports done) before the clocks go
    cfg = TraceConfig(noise_samples=3)
    monkeypatch.setattr(time, "perf_counter", no_clock)
    monkeypatch.setattr(time, "time", no_clock)
    first = trace_many(model, tok, FACTS, TABLE, cfg)
    again = trace_many(model, tok, FACTS, TABLE, cfg)
    for a, b in zip(first, again):
        for c in a.patched:
            for m in a.patched[c]:
                assert np.array_equal(a.patched[c][m], b.patched[c][m], equal_nan=True)
    adapter = ModelAdapter(model, tok)
    n = engine.min_tokens_for(adapter)
    assert 16 <= n <= 2048 and n == engine.min_tokens_for(adapter)
