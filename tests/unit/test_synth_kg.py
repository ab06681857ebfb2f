"""synth_kg generator: defaults, determinism, functional relations, names, templates, topologies."""

from __future__ import annotations

import re
import statistics
from collections import Counter

import networkx as nx
import pytest

from synth_kg import KGConfig, KnowledgeGraph, generate, gini, rank_quantile_bins
from synth_kg.relations import ATTRIBUTE_RELATIONS, BUILTIN_RELATIONS, make_relations, template_words, vocabulary
from synth_kg.topology import ba_edge_count


@pytest.fixture(scope="module")
def default_kg() -> KnowledgeGraph:
    return generate(KGConfig())


def _undirected(kg: KnowledgeGraph) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(e.id for e in kg.entities)
    g.add_edges_from((t.subject, t.object) for t in kg.triples)
    return g


def _assert_functional(kg: KnowledgeGraph) -> None:
    pairs = Counter((t.subject, t.relation) for t in kg.triples)
    assert pairs and max(pairs.values()) == 1


def test_defaults_give_the_papers_scale(default_kg):
    kg = default_kg
    assert kg.config["topology"] == "ba" and kg.seed == 0
    assert len([e for e in kg.entities if e.kind == "entity"]) == 200
    assert len(kg.relations) == 50
    assert 550 <= len(kg.triples) <= 650
    assert [t.id for t in kg.triples] == list(range(len(kg.triples)))
    assert set(kg.versions) == {"python", "networkx", "faker"}
    _assert_functional(kg)


def test_every_fact_renders_and_prompts_cut_before_the_object(default_kg):
    kg = default_kg
    t = kg.triples[7]
    s, o = kg.subject_name(7), kg.object_name(7)
    for prompt, sentence in zip(kg.prompts(7), kg.sentences(7)):
        assert sentence == f"{prompt} {o}"
        assert s in prompt and not prompt.endswith(" ")
    assert len(kg.paraphrase_prompts(7)) == 1
    assert kg.paraphrase_prompts(7)[0] not in kg.prompts(7)
    assert kg.entity_by_name(s).id == t.subject
    lines = kg.corpus_lines()
    assert len(lines) == 3 * len(kg.triples)
    assert Counter(lines) == Counter(x for tid in range(len(kg.triples)) for x in kg.sentences(tid))


def test_names_unique_capitalised_and_apart_from_template_words(default_kg):
    kg = default_kg
    names = [e.name for e in kg.entities]
    assert len(set(names)) == len(names)
    vocab = vocabulary(kg.relations)
    for name in names:
        tokens = name.split()
        assert len(tokens) >= 2
        assert all(re.fullmatch(r"[A-Z][A-Za-z]*", tok) for tok in tokens)
        assert not {tok.lower() for tok in tokens} & vocab
    # no name is a token-prefix of another
    name_set = set(names)
    for name in names:
        tokens = name.split()
        assert not any(" ".join(tokens[:i]) in name_set for i in range(1, len(tokens)))


def test_templates_object_last_and_heldout_in_vocabulary():
    rels = make_relations(300, attributes=len(ATTRIBUTE_RELATIONS), templates=4, heldout=2)
    assert len({r.name for r in rels}) == len(rels)
    for r in rels:
        assert len(r.templates) == 4 and len(r.heldout_templates) == 2
        assert not set(r.templates) & set(r.heldout_templates)
        known = {w for t in r.templates for w in template_words(t)}
        for t in r.templates + r.heldout_templates:
            assert t.count("{s}") == 1 and t.endswith("{o}") and t.count("{o}") == 1
            assert t.replace("{s}", "").replace("{o}", "") == t.replace("{s}", "").replace("{o}", "").lower()
        for t in r.heldout_templates:
            assert set(template_words(t)) <= known, (r.name, t)
    assert len(BUILTIN_RELATIONS) >= 50


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    cfg = dict(entities=120, attribute_relations=1, exposure="popularity", repeats=2)
    generate(KGConfig(seed=3, **cfg)).save(tmp_path / "a")
    generate(KGConfig(seed=3, **cfg)).save(tmp_path / "b")
    generate(KGConfig(seed=4, **cfg)).save(tmp_path / "c")
    for f in ("kg.json", "corpus.txt", "graph.graphml"):
        a, b, c = ((tmp_path / d / f).read_bytes() for d in "abc")
        assert a == b, f
        assert a != c, f


def test_regenerating_from_the_stored_config_gives_the_same_kg(default_kg):
    assert generate(KGConfig(**default_kg.config)).content_hash() == default_kg.content_hash()


@pytest.mark.parametrize("topology", ["ba", "er", "powerlaw"])
def test_every_entity_reachable_or_reported_dropped(topology):
    kg = generate(KGConfig(topology=topology, entities=300, seed=1))
    assert nx.is_connected(_undirected(kg))
    assert all(e.degree > 0 for e in kg.entities)
    assert len(kg.entities) + len(kg.dropped) == 300
    _assert_functional(kg)


def test_drop_mode_lists_removed_nodes():
    kg = generate(KGConfig(topology="powerlaw", entities=300, exponent=2.1, singletons="drop", seed=2))
    assert kg.dropped, "a skewed Chung-Lu graph of this size has small components"
    assert all(d["reason"] for d in kg.dropped)
    assert len(kg.entities) + len(kg.dropped) == 300
    assert nx.is_connected(_undirected(kg))


def test_er_defaults_to_bas_edge_count():
    kg = generate(KGConfig(topology="er", seed=5))
    assert kg.generation["graph_edges"] == ba_edge_count(200, 3)
    assert generate(KGConfig(topology="er", edges=400)).generation["graph_edges"] == 400


def test_ba_is_skewed_and_er_is_not(default_kg):
    ba = [e.degree for e in default_kg.entities]
    assert max(ba) >= 5 * statistics.median(ba)
    er = [e.degree for e in generate(KGConfig(topology="er")).entities]
    assert max(er) <= 3 * statistics.median(er)


def test_powerlaw_skew_knob_raises_gini_monotonically():
    ginis = [gini([e.degree for e in generate(KGConfig(topology="powerlaw", entities=1000, exponent=g)).entities])
             for g in (3.5, 2.8, 2.4, 2.1)]
    assert ginis == sorted(ginis) and ginis[0] < ginis[-1] - 0.1, ginis


def test_direction_is_random_so_hubs_are_subjects_and_objects(default_kg):
    hub = max(default_kg.entities, key=lambda e: e.degree)
    assert hub.in_degree >= hub.degree // 4 and hub.out_degree >= hub.degree // 4


def test_few_relations_force_flips_and_drops_but_stay_functional():
    kg = generate(KGConfig(entities=2000, relations=4, seed=1))
    _assert_functional(kg)
    assert kg.generation["flipped_edges"] > 0 and kg.generation["dropped_edges"] > 0
    assert all(e.out_degree <= 4 for e in kg.entities)
    assert all(e.degree > 0 for e in kg.entities)
    assert len(kg.entities) + len(kg.dropped) == 2000


def test_auto_relations_at_5000_entities():
    kg = generate(KGConfig(entities=5000, relations="auto", seed=0))
    _assert_functional(kg)
    assert len(kg.relations) == kg.generation["max_graph_degree"]
    assert kg.generation["flipped_edges"] == 0 and kg.generation["dropped_edges"] == 0
    assert len({e.name for e in kg.entities}) == len(kg.entities)


@pytest.mark.slow
def test_auto_relations_at_50000_entities_under_a_minute():
    import time

    t0 = time.perf_counter()
    kg = generate(KGConfig(entities=50_000, relations="auto", seed=0))
    elapsed = time.perf_counter() - t0
    _assert_functional(kg)
    assert len({e.name for e in kg.entities}) == 50_000
    assert elapsed < 60, elapsed


def test_attribute_relations_share_an_object_pool():
    kg = generate(KGConfig(entities=100, attribute_relations=2, attribute_pool=5, seed=0))
    attrs = {r.id for r in kg.relations if r.kind == "attribute"}
    assert len(attrs) == 2
    facts = [t for t in kg.triples if t.relation in attrs]
    assert len(facts) == 2 * 100
    values = {t.object for t in facts}
    assert 1 < len(values) <= 5
    assert all(kg.entity(v).kind == "value" for v in values)
    assert max(Counter(t.object for t in facts).values()) > 10  # object collisions
    _assert_functional(kg)


def test_popularity_exposure_repeats_hub_facts_more():
    kg = generate(KGConfig(exposure="popularity", repeats=2))
    counts = kg.fact_counts()
    deg = [kg.entity(t.subject).degree for t in kg.triples]
    hub_fact = max(range(len(deg)), key=lambda i: deg[i])
    leaf_fact = min(range(len(deg)), key=lambda i: deg[i])
    assert counts[hub_fact] > counts[leaf_fact] >= 1
    assert len(kg.corpus_lines()) == 3 * sum(counts)
    hub = kg.entity(kg.triples[hub_fact].subject)
    assert kg.exposure(hub.id) == sum(1 for line in kg.corpus_lines() if hub.name in line)


def test_rank_quantile_bins():
    assert rank_quantile_bins([10, 20, 30, 40, 50], 5) == [0, 1, 2, 3, 4]
    assert rank_quantile_bins([5, 1, 3, 2, 4, 6, 7, 8, 9, 10], 5) == [2, 0, 1, 0, 1, 2, 3, 3, 4, 4]
    # equal values without a tiebreak share a bin; with one they are ranked by it
    assert rank_quantile_bins([1, 1, 1, 1], 2) == [0, 0, 0, 0]
    assert rank_quantile_bins([1, 1, 1, 1], 2, tiebreak=[3, 2, 1, 0]) == [1, 1, 0, 0]


def test_subject_bins_keep_each_subjects_facts_together(default_kg):
    bins = default_kg.subject_bins(5)
    assert set(bins) == set(range(5))
    by_subject: dict[int, set[int]] = {}
    for t, b in zip(default_kg.triples, bins):
        by_subject.setdefault(t.subject, set()).add(b)
    assert all(len(v) == 1 for v in by_subject.values())
    deg = [default_kg.entity(t.subject).degree for t in default_kg.triples]
    low = [d for d, b in zip(deg, bins) if b == 0]
    high = [d for d, b in zip(deg, bins) if b == 4]
    assert max(low) <= min(high)
    assert len(default_kg.object_bins(3)) == len(default_kg.triples)
