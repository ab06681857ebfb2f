"""Layer and site choice from evidence: exclusions, the site rule, the fallback, and two-stage vs exact-only."""

from __future__ import annotations

import pytest

from kdel.errors import UserError
from kdel.trace.localize import _decide, choose_site_layer, choose_site_layers, default_window, family_default_layer


def _choice(sl, last, subject=None, listed=(), family="llama", min_effect=0.1):
    """A decision from constructed effects: sl/last = effect per layer; subject = per layer, each subject token."""
    effects = {"subject_last": dict(enumerate(sl)), "last": dict(enumerate(last))}
    subject = subject or {layer: [e] for layer, e in enumerate(sl)}
    return _decide(7, effects, subject, len(sl), family, 3, list(listed), min_effect, 2.0, 0.9, "exact")


def test_never_picks_an_embedding_like_layer():
    # layer 0 restores the fact from every subject token (an extended embedding): the biggest effect, excluded
    c = _choice([0.97, 0.10, 0.45, 0.30, 0.05, 0.0], [0.2, 0.1, 0.1, 0.1, 0.1, 0.1],
                subject={0: [0.95, 0.97], 1: [0.0, 0.10], 2: [0.1, 0.45], 3: [0.0, 0.3], 4: [0, 0.05], 5: [0, 0]})
    assert (c.site, c.layer, c.effect) == ("subject_last", 2, 0.45)
    assert (c.runner_up_layer, c.runner_up_effect) == (3, 0.30)
    assert 0 in c.excluded and "embedding-like" in c.excluded[0] and not c.fallback
    # high at one subject token only: not embedding-like
    c = _choice([0.97, 0.1, 0.45], [0.2, 0.1, 0.1], subject={0: [0.2, 0.97], 1: [0, 0.1], 2: [0, 0.45]})
    assert c.layer == 0 and not c.excluded
    # listed layers are never chosen either, at either site
    c = _choice([0.1, 0.2, 0.6], [0.05, 0.9, 0.1], listed=[1, 2])
    assert c.layer not in (1, 2) and c.excluded == {1: "listed", 2: "listed"}


def test_site_rule():
    both = _choice([0.0, 0.3, 0.1], [0.5, 0.1, 0.0])  # last < 2 x subject_last: the subject site
    assert (both.site, both.layer) == ("subject_last", 1)
    assert both.site_best["last"] == {"layer": 0, "effect": 0.5}
    strong_last = _choice([0.0, 0.3, 0.1], [0.7, 0.1, 0.0])
    assert (strong_last.site, strong_last.layer) == ("last", 0)
    only_last = _choice([0.02, 0.05, 0.01], [0.3, 0.1, 0.0])
    assert only_last.site == "last" and "only last" in only_last.rule


def test_fallback_when_every_effect_is_tiny():
    c = _choice([0.01, 0.02, 0.0, 0.03] * 8, [0.05] * 32, family="llama")
    assert c.fallback and c.layer == 5 and c.site == "subject_last"  # Llama-2-7B's layer 5 of 32
    assert "minimum effect 0.1" in c.fallback_reason and "llama default" in c.fallback_reason
    c = _choice([0.01] * 4, [0.0] * 4, listed=[1], family="gpt2")
    assert c.fallback and c.layer == 2  # the default (1 of 4) is listed: the nearest other layer
    assert family_default_layer("gpt2", 48) == 17 and family_default_layer("gpt_neox", 28) == 5


def test_window_default():
    assert [default_window(n) for n in (4, 8, 12, 24, 30, 48)] == [1, 1, 2, 4, 5, 8]


def test_two_stage_matches_exact_on_the_trained_model(trained_model_dir, tiny_kg_dir):
    from kdel.facts import load_fact_table
    from kdel.models.loading import load_model
    from kdel.trace import TraceConfig

    table = load_fact_table(kg=tiny_kg_dir)
    model, tok = load_model(trained_model_dir, "cpu", kg_hash=table.source_hash)
    facts = table.facts[:12]
    cfg = TraceConfig(noise_samples=4)
    t_fast, t_exact = {}, {}
    fast = choose_site_layers(model, tok, facts, table, config=cfg, two_stage=True, timings=t_fast)
    exact = choose_site_layers(model, tok, facts, table, config=cfg, two_stage=False, timings=t_exact)
    assert set(t_fast) == {"recorded_runs", "attribution", "confirmed"} and min(t_fast.values()) > 0
    assert set(t_exact) == {"recorded_runs", "confirmed"} and min(t_exact.values()) > 0
    same = sum((a.site, a.layer) == (b.site, b.layer) for a, b in zip(fast, exact))
    assert same >= 10, [(a.site, a.layer, b.site, b.layer) for a, b in zip(fast, exact)]
    for a, b in zip(fast, exact):
        assert a.method == "two-stage" and b.method == "exact" and a.window == 1
        assert len(a.attribution["last"]) == 4 and a.attribution_effect is not None
        assert b.effect == pytest.approx(b.confirmed[b.site][b.layer])
        if (a.site, a.layer) == (b.site, b.layer):  # both record the same exact effect
            assert a.effect == pytest.approx(b.effect, abs=1e-5)  # float32: batches differ
    auto = choose_site_layer(model, tok, facts[0], table, config=cfg)  # 4 layers < 8 x top k: exact-only
    assert auto.method == "exact" and auto.to_json()["fact_id"] == facts[0].id
    with pytest.raises(UserError, match="out of range"):
        choose_site_layer(model, tok, facts[0], table, exclude_layers=[9])


@pytest.mark.parametrize("layers,top_k,method", [(12, 3, "exact"), (24, 3, "two-stage"), (16, 2, "two-stage")])
def test_auto_uses_two_stage_from_8_top_k_layers(random_model, layers, top_k, method):
    """`two_stage="auto"`: exact-only below 8 x top_k layers (two-stage saved 1.29x at 12 layers), two-stage from
    there on."""
    from kdel.facts import Fact, FactTable
    from kdel.trace import TraceConfig

    model, tok = random_model("llama", n_layers=layers)
    fact = Fact(0, "Maria Lopez", "John Smith", None, ("Maria Lopez works with",))
    c = choose_site_layer(model, tok, fact, FactTable([fact], "facts", "test"), top_k=top_k,
                          config=TraceConfig(noise_samples=2))
    assert c.method == method and (c.attribution != {}) == (method == "two-stage")
