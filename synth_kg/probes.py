"""Probe groups of a deleted fact (DESIGN §1, precedence of §12).

Works on any list of (subject, relation, object) keys (entity ids for a KG bundle, surface strings for
a facts file), so the KG path and the facts-file path share one definition.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

PROBE_GROUPS: tuple[str, ...] = (
    "target",
    "paraphrase",
    "same_subject",
    "same_object",
    "subject_as_object",
    "neighbors_1hop",
    "neighbors_2hop",
    "same_relation",
    "unrelated",
)

Key = Hashable


@dataclass
class ProbeIndex:
    """Precomputed lookups over a list of triples, so each case's groups cost O(group sizes)."""

    triples: Sequence[tuple[Key, Key | None, Key]]
    by_subject: dict[Key, list[int]] = field(default_factory=dict)
    by_object: dict[Key, list[int]] = field(default_factory=dict)
    by_relation: dict[Key, list[int]] = field(default_factory=dict)
    adjacency: dict[Key, set[Key]] = field(default_factory=dict)

    @classmethod
    def build(cls, triples: Sequence[tuple[Key, Key | None, Key]]) -> ProbeIndex:
        by_s: dict[Key, list[int]] = defaultdict(list)
        by_o: dict[Key, list[int]] = defaultdict(list)
        by_r: dict[Key, list[int]] = defaultdict(list)
        adj: dict[Key, set[Key]] = defaultdict(set)
        for i, (s, r, o) in enumerate(triples):
            by_s[s].append(i)
            by_o[o].append(i)
            if r is not None:
                by_r[r].append(i)
            if s != o:
                adj[s].add(o)
                adj[o].add(s)
        return cls(list(triples), dict(by_s), dict(by_o), dict(by_r), dict(adj))

    def distances_from(self, node: Key, max_depth: int = 2) -> dict[Key, int]:
        """Undirected graph distance from `node` to every node within `max_depth`."""
        dist = {node: 0}
        frontier = [node]
        for depth in range(1, max_depth + 1):
            nxt = []
            for u in frontier:
                for v in self.adjacency.get(u, ()):
                    if v not in dist:
                        dist[v] = depth
                        nxt.append(v)
            frontier = nxt
        return dist

    def unrelated_sample(self, size: int, seed: int) -> list[int]:
        """The run's fixed random sample of fact indices (drawn once per run, sorted)."""
        n = len(self.triples)
        rng = random.Random(seed)
        return sorted(rng.sample(range(n), min(size, n)))

    def groups(self, index: int, unrelated_pool: Sequence[int] = ()) -> dict[str, list[int]]:
        """Every probe group of fact `index`, disjoint by precedence; lists of fact indices, sorted.

        `target` and `paraphrase` both hold the fact itself (they differ by the prompts used).
        `unrelated` = members of `unrelated_pool` in no earlier group (their subjects are at distance >= 3).
        """
        s, r, o = self.triples[index]
        taken = {index}
        out: dict[str, list[int]] = {"target": [index], "paraphrase": [index]}

        def claim(name: str, candidates) -> None:
            picked = sorted({i for i in candidates if i not in taken})
            taken.update(picked)
            out[name] = picked

        claim("same_subject", self.by_subject.get(s, ()))
        claim("same_object", self.by_object.get(o, ()))
        claim("subject_as_object", self.by_object.get(s, ()))
        dist = self.distances_from(s, 2)
        hop1 = [i for node, d in dist.items() if d == 1 for i in self.by_subject.get(node, ())]
        hop2 = [i for node, d in dist.items() if d == 2 for i in self.by_subject.get(node, ())]
        claim("neighbors_1hop", hop1)
        claim("neighbors_2hop", hop2)
        claim("same_relation", self.by_relation.get(r, ()) if r is not None else ())
        claim("unrelated", unrelated_pool)
        return out
