"""Entity resolution, the entity's facts and its probe groups, the batch/sequential choice, entity sampling
(no model: the tiny KG only)."""

from __future__ import annotations

import numpy as np
import pytest

from kdel.audit.entity import sample_entities
from kdel.errors import UserError
from kdel.facts import FactTable, export_kg_facts
from kdel.forget.apply import mode_for
from kdel.forget.entity import ENTITY_GROUPS, entity_fact_ids, entity_probe_groups, resolve_entity
from kdel.forget.extraction import candidate_objects, contains_words


@pytest.fixture(scope="module")
def table(tiny_kg):
    return FactTable.from_kg(tiny_kg)


@pytest.fixture(scope="module")
def hub(tiny_kg):
    return max(tiny_kg.entities, key=lambda e: (e.degree, -e.id))


def test_resolve_by_id_and_by_name_agree(table, hub):
    by_id = resolve_entity(table, entity_id=hub.id)
    by_name = resolve_entity(table, subject="  " + hub.name.replace(" ", "  ") + " ")
    assert by_id == by_name
    assert (by_id.degree, by_id.in_degree, by_id.out_degree) == (hub.degree, hub.in_degree, hub.out_degree)


def test_resolve_errors_are_user_errors(table, tiny_kg, tmp_path, hub):
    with pytest.raises(UserError, match="exactly one"):
        resolve_entity(table)
    with pytest.raises(UserError, match="exactly one"):
        resolve_entity(table, subject=hub.name, entity_id=hub.id)
    with pytest.raises(UserError, match="valid ids are 0.."):
        resolve_entity(table, entity_id=len(tiny_kg.entities))
    with pytest.raises(UserError, match="did you mean"):
        resolve_entity(table, subject=hub.name[:-1])
    export_kg_facts(tiny_kg, tmp_path / "facts.jsonl")
    ftable = FactTable.from_jsonl(tmp_path / "facts.jsonl")
    with pytest.raises(UserError, match="--entity ID needs --kg"):
        resolve_entity(ftable, entity_id=hub.id)
    e = resolve_entity(ftable, subject=hub.name)  # a facts file: by name, popularity from the file
    assert e.id is None and e.degree == hub.degree


def test_entity_facts_as_subject_and_as_object(table, tiny_kg, hub):
    subj = entity_fact_ids(table, hub.name)
    both = entity_fact_ids(table, hub.name, as_object=True)
    assert subj == sorted(t.id for t in tiny_kg.triples if t.subject == hub.id)
    assert both == sorted(tiny_kg.facts_of(hub.id))
    assert len(subj) == hub.out_degree and len(both) == hub.degree
    only_object = next(e for e in tiny_kg.entities if e.out_degree == 0 and e.in_degree > 0) \
        if any(e.out_degree == 0 and e.in_degree > 0 for e in tiny_kg.entities) else None
    if only_object is not None:
        with pytest.raises(UserError, match="--as-object"):
            entity_fact_ids(table, only_object.name)


def test_probe_groups_are_disjoint_and_follow_the_definitions(table, tiny_kg, hub):
    deleted = entity_fact_ids(table, hub.name)
    pool = table.unrelated_sample(40, 0)
    groups = entity_probe_groups(table, hub.name, deleted, pool)
    assert tuple(groups) == ENTITY_GROUPS
    assert groups["entity"] == groups["paraphrase"] == deleted
    seen: set[int] = set(deleted)
    for g in ENTITY_GROUPS[2:]:
        assert not seen & set(groups[g]), g
        seen |= set(groups[g])
    # definitions, recomputed from the KG
    dist = tiny_kg.to_networkx().to_undirected()
    import networkx as nx

    d = nx.single_source_shortest_path_length(dist, hub.id, cutoff=2)
    holes = {t.id for t in tiny_kg.triples if t.object == hub.id} - set(deleted)
    assert set(groups["knowledge_holes"]) == holes
    hop1 = {t.id for t in tiny_kg.triples if d.get(t.subject) == 1} - set(deleted) - holes
    assert set(groups["neighbors_1hop"]) == hop1
    rels = {tiny_kg.triple(i).relation for i in deleted}
    for i in groups["same_relation"]:
        assert tiny_kg.triple(i).relation in rels
    for i in groups["unrelated"]:
        assert i in pool and tiny_kg.triple(i).subject not in d  # distance >= 3
    with_obj = entity_fact_ids(table, hub.name, as_object=True)
    g2 = entity_probe_groups(table, hub.name, with_obj, pool)
    assert g2["knowledge_holes"] == []  # deleted with --as-object: no hole left to measure


def test_mode_is_the_methods_choice():
    assert mode_for("rome") == mode_for("r-rome") == "sequential"
    assert {mode_for(m) for m in ("memit", "ft", "ga", "npo")} == {"batch"}
    assert mode_for("rome", "batch") == "batch" and mode_for("npo", "sequential") == "sequential"
    with pytest.raises(UserError):
        mode_for("rome", "sideways")


def test_contains_words_and_candidates(table):
    assert contains_words("is John Smith .", "John Smith")
    assert not contains_words("is John Smithson", "John Smith")
    assert not contains_words("", "John")
    f = table.facts[0]
    cands = candidate_objects(table, f, 50, 0)
    assert f.target not in cands and cands == sorted(set(cands))
    assert all(any(g.relation == f.relation and g.target == c for g in table.facts) for c in cands)
    assert candidate_objects(table, f, 50, 0) == cands and candidate_objects(table, f, 0, 0) == []


def test_entities_sampled_across_degree_bins(table):
    recalled = np.arange(len(table))
    picked = sample_entities(table, recalled, 5, 3, seed=1)
    assert [p["bin"] for p in picked] == [0, 0, 1, 1, 2]
    assert len({p["name"] for p in picked}) == 5
    lo = max(p["degree"] for p in picked if p["bin"] == 0)
    hi = min(p["degree"] for p in picked if p["bin"] == 2)
    assert lo <= hi
    assert sample_entities(table, recalled, 5, 3, seed=1) == picked
    assert sample_entities(table, recalled, 5, 3, seed=2) != picked
    # only subjects of recalled facts are candidates
    one = sample_entities(table, np.array([0]), 3, 1, seed=0)
    assert [p["name"] for p in one] == [table.fact(0).subject]
