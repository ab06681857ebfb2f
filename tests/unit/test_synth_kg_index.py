"""Popularity bins and probe groups are defined once (synth_kg.index) and agree across inputs.

The KG path (entity ids), the KG seen as a FactTable, and the KG exported with `kdel kg export-facts` and
read back as a facts file give the same bins (ties broken by entity id, DESIGN §12) and the same probe
groups; facts files match entities on normalised surface forms (" Madrid" is "Madrid").
"""

from __future__ import annotations

import json

import pytest

from kdel.errors import UserError
from kdel.facts import FactTable, export_kg_facts
from synth_kg import KGConfig, KnowledgeGraph, generate, surface_key
from synth_kg.index import FactIndex, first_appearance_ids
from synth_kg.relations import make_relations


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("cfg", [KGConfig(entities=30, relations=12, seed=0),
                                 KGConfig(topology="er", entities=60, seed=2, attribute_relations=2)])
def test_kg_table_and_exported_file_agree(cfg, tmp_path):
    kg = generate(cfg)
    table = FactTable.from_kg(kg)
    export_kg_facts(kg, tmp_path / "facts.jsonl")
    facts = FactTable.from_jsonl(tmp_path / "facts.jsonl")
    for n in (3, 5):
        assert kg.subject_bins(n) == table.subject_bins(n) == facts.subject_bins(n)
        assert kg.object_bins(n) == table.object_bins(n) == facts.object_bins(n)
    pool = kg.unrelated_pool(20, seed=1)
    assert pool == table.unrelated_sample(20, 1) == facts.unrelated_sample(20, 1)
    for tid in range(len(kg.triples)):
        assert kg.probe_groups(tid, 20, 1) == table.probe_groups(tid, pool) == facts.probe_groups(tid, pool)


def test_the_default_kgs_bins_break_degree_ties_by_entity_id():
    """The bug this replaces: facts.py broke ties by name, graph.py by id (50 of 591 facts disagreed)."""
    kg = generate(KGConfig())
    table = FactTable.from_kg(kg)
    deg = [kg.entities[t.subject].degree for t in kg.triples]
    order = sorted(range(len(kg.triples)), key=lambda i: (deg[i], kg.triples[i].subject))
    bins = table.subject_bins(5)
    assert [bins[i] for i in order] == sorted(bins), "bins must follow the (degree, id) ranking"
    by_name = sorted(range(len(kg.triples)), key=lambda i: (deg[i], kg.subject_name(i)))
    assert [bins[i] for i in by_name] != sorted(bins), "a name tie-break would give other bins on this KG"


def test_ties_go_by_id_not_by_name_on_a_hand_built_kg():
    # Four subjects of equal degree 2, named in reverse alphabetical order of their ids.
    names = ["Zed Zane", "Yan Yu", "Xia Xu", "Wes Ward", "Obi One"]
    triples = [(0, 0, 4), (1, 0, 4), (2, 0, 4), (3, 0, 4), (0, 1, 1), (2, 1, 3)]
    kg = KnowledgeGraph.from_parts(names, make_relations(2), triples)
    # subject degrees per fact: 0->2, 1->2, 2->2, 3->2, 0->2, 2->2; ties by id: ranks 0,1 (id 0), 2 (id 1), 3,4 (id 2), 5 (id 3)
    assert kg.subject_bins(2) == [0, 0, 1, 1, 0, 1]
    assert FactTable.from_kg(kg).subject_bins(2) == [0, 0, 1, 1, 0, 1]


def test_facts_file_without_ids_uses_first_appearance(tmp_path):
    rows = [
        {"subject": "Bea", "prompt": "Bea likes", "target": "Cal"},
        {"subject": "Abe", "prompt": "Abe likes", "target": "Dot"},
        {"subject": "Cal", "prompt": "Cal likes", "target": "Dot"},
        {"subject": "Dot", "prompt": "Dot likes", "target": "Abe"},
    ]
    table = FactTable.from_jsonl(_write(tmp_path / "f.jsonl", rows))
    # mentions: Bea 1, Cal 2, Abe 2, Dot 3; first appearance ids: Bea 0, Cal 1, Abe 2, Dot 3
    assert first_appearance_ids([("Bea", None, "Cal"), ("Abe", None, "Dot")]) == {"Bea": 0, "Cal": 1, "Abe": 2, "Dot": 3}
    # subjects ranked by (popularity, id): Bea(1,0) < Cal(2,1) < Abe(2,2) < Dot(3,3) -> facts 0, 2, 1, 3
    assert table.subject_bins(4) == [0, 2, 1, 3]
    assert table.subject_bins(2) == [0, 1, 0, 1]


def test_ids_in_a_facts_file_must_be_complete_and_consistent(tmp_path):
    base = {"prompt": "A likes", "subject": "A", "target": "B"}
    with pytest.raises(UserError, match="every line or on none"):
        FactTable.from_jsonl(_write(tmp_path / "a.jsonl", [dict(base, subject_id=0, object_id=1), base]))
    clash = [dict(base, subject_id=0, object_id=1), {"subject": "B", "prompt": "B likes", "target": "A",
                                                     "subject_id": 2, "object_id": 0}]
    with pytest.raises(UserError, match="disagrees"):
        FactTable.from_jsonl(_write(tmp_path / "b.jsonl", clash))


def test_surface_forms_are_normalised_for_matching(tmp_path):
    assert surface_key("  Madrid \t") == "Madrid" and surface_key("madrid") == "madrid"
    rows = [
        {"subject": "Spain", "prompt": "The capital of Spain is", "target": " Madrid", "relation": "capital"},
        {"subject": "Madrid", "prompt": "Madrid is the seat of", "target": " Ayuntamiento", "relation": "seat"},
        {"subject": "Ayuntamiento", "prompt": "Ayuntamiento is run by", "target": " Mayor", "relation": "run"},
        {"subject": "France", "prompt": "The capital of France is", "target": " Paris", "relation": " capital"},
        {"subject": "Juan", "prompt": "Juan lives in", "target": " Spain", "relation": "home"},
    ]
    table = FactTable.from_jsonl(_write(tmp_path / "real.jsonl", rows))
    g = table.probe_groups(1)  # the fact about "Madrid": the Spain fact's target is " Madrid"
    assert g["subject_as_object"] == [0]
    g0 = table.probe_groups(0)  # Spain -> Madrid: Madrid's own fact is one hop away, Juan's fact names Spain
    assert g0["neighbors_1hop"] == [1] and g0["subject_as_object"] == [4]
    assert g0["neighbors_2hop"] == [2]
    assert g0["same_relation"] == [3], "relation labels are normalised the same way"
    # popularity = lines mentioning the entity, counted on normalised forms: Madrid is in two lines
    assert table.facts[1].subject_popularity == 2 and table.facts[0].object_popularity == 2
    # case is not folded: "madrid" is another entity
    rows[1] = dict(rows[1], subject="madrid", prompt="madrid is the seat of")
    other = FactTable.from_jsonl(_write(tmp_path / "case.jsonl", rows))
    assert other.probe_groups(1)["subject_as_object"] == []


def test_paraphrase_group_is_empty_without_heldout_prompts(tmp_path):
    rows = [{"subject": "A", "prompt": "A likes", "target": "B", "paraphrases": ["A is fond of"]},
            {"subject": "B", "prompt": "B likes", "target": "A"}]
    table = FactTable.from_jsonl(_write(tmp_path / "p.jsonl", rows))
    assert table.probe_groups(0)["paraphrase"] == [0] and table.probe_groups(1)["paraphrase"] == []


def test_fact_index_rejects_missing_popularity():
    with pytest.raises(ValueError, match="no popularity"):
        FactIndex([("a", None, "b")], {"a": 1.0}, {"a": 0, "b": 1})
