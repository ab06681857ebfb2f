"""Probe groups on a hand-built KG where every group is worked out by hand (DESIGN §1, §12)."""

from __future__ import annotations

import networkx as nx
import pytest

from synth_kg import PROBE_GROUPS, KGConfig, KnowledgeGraph, generate
from synth_kg.relations import make_relations

NAMES = ["Ann Avery", "Bob Brown", "Cara Cole", "Dan Dyer", "Eve Evans", "Fay Ford", "Gus Gray", "Hal Hunt",
         "Ida Irwin", "Jon Jones"]
A, B, C, D, E, F, G, H, I, J = range(10)
TRIPLES = [
    (A, 0, B),  # 0: the target
    (A, 1, C),  # 1: same subject
    (D, 1, B),  # 2: same object (D is also 2 hops away: precedence)
    (E, 2, A),  # 3: subject as object (E is also 1 hop away)
    (C, 0, F),  # 4: 1 hop (and same relation: precedence)
    (B, 2, D),  # 5: 1 hop
    (F, 1, G),  # 6: 2 hops
    (G, 0, H),  # 7: same relation, 3 hops
    (H, 1, I),  # 8: unrelated, 4 hops
    (I, 2, J),  # 9: unrelated, 5 hops
    (D, 0, E),  # 10: 2 hops (and same relation)
]


@pytest.fixture(scope="module")
def hand_kg() -> KnowledgeGraph:
    return KnowledgeGraph.from_parts(NAMES, make_relations(3), TRIPLES)


def test_from_parts_computes_degrees(hand_kg):
    a = hand_kg.entity(A)
    assert (a.degree, a.in_degree, a.out_degree) == (3, 1, 2)
    j = hand_kg.entity(J)
    assert (j.degree, j.in_degree, j.out_degree) == (1, 1, 0)
    assert hand_kg.triple(10).object == E


def test_groups_worked_out_by_hand(hand_kg):
    groups = hand_kg.probe_groups(0, unrelated_size=200, seed=0)
    assert groups == {
        "target": [0],
        "paraphrase": [0],
        "same_subject": [1],
        "same_object": [2],
        "subject_as_object": [3],
        "neighbors_1hop": [4, 5],
        "neighbors_2hop": [6, 10],
        "same_relation": [7],
        "unrelated": [8, 9],
    }
    assert list(groups) == list(PROBE_GROUPS)


def test_unrelated_only_from_the_fixed_sample(hand_kg):
    pool = hand_kg.unrelated_pool(4, seed=1)
    assert len(pool) == 4 and pool == hand_kg.unrelated_pool(4, seed=1)
    groups = hand_kg.probe_groups(0, unrelated_size=4, seed=1)
    assert groups["unrelated"] == [i for i in pool if i in (8, 9)]


def test_groups_of_another_case(hand_kg):
    # fact 7 = (G, r0, H): G's neighbours F, H; 2 hops C, I
    groups = hand_kg.probe_groups(7)
    assert groups["same_subject"] == []
    assert groups["same_object"] == []
    assert groups["subject_as_object"] == [6]
    assert groups["neighbors_1hop"] == [8]  # H's fact; F's fact (6) was taken earlier
    assert groups["neighbors_2hop"] == [4, 9]
    assert groups["same_relation"] == [0, 10]
    assert groups["unrelated"] == [1, 2, 3, 5]


def test_groups_disjoint_and_unrelated_far_away_on_a_generated_kg():
    kg = generate(KGConfig(entities=150, seed=4))
    und = nx.Graph((t.subject, t.object) for t in kg.triples)
    for tid in (0, 17, 200, len(kg.triples) - 1):
        groups = kg.probe_groups(tid, unrelated_size=100, seed=0)
        members = [i for name, ids in groups.items() if name != "paraphrase" for i in ids]
        assert len(members) == len(set(members)), "groups must be disjoint"
        s = kg.triple(tid).subject
        dist = nx.single_source_shortest_path_length(und, s)
        for i in groups["unrelated"]:
            assert dist.get(kg.triple(i).subject, 99) >= 3
        for i in groups["neighbors_1hop"]:
            assert dist[kg.triple(i).subject] == 1
        for i in groups["same_relation"]:
            assert kg.triple(i).relation == kg.triple(tid).relation


def test_unknown_fact_id_is_a_user_error(hand_kg):
    from kdel.errors import UserError

    with pytest.raises(UserError, match="unknown fact id 11"):
        hand_kg.probe_groups(11)
