"""Graph edges → functional triples (DESIGN §2, §12 'functional relations at scale').

Edges are visited in a seeded random order; each gets a random direction and a random relation that its
subject does not use yet. When the subject already uses every relation the edge is turned around; when
both ends are full it is dropped and counted. Attribute facts give every entity one object per attribute
relation, drawn from a shared pool of values.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class BuiltTriples:
    triples: list[tuple[int, int, int]]  # (subject node, relation id, object node)
    flipped_edges: int = 0
    dropped_edges: int = 0


def _free_relation(rng: random.Random, used: set[int], n_rel: int) -> int | None:
    if len(used) >= n_rel:
        return None
    for _ in range(16):  # rejection sampling: cheap while few relations are used
        r = rng.randrange(n_rel)
        if r not in used:
            return r
    free = [r for r in range(n_rel) if r not in used]
    return free[rng.randrange(len(free))]


def edges_to_triples(edges: list[tuple[int, int]], n_relations: int, seed: int) -> BuiltTriples:
    """Functional triples from undirected `edges` over relation ids 0..n_relations-1."""
    rng = random.Random(seed)
    order = sorted((min(u, v), max(u, v)) for u, v in edges)
    rng.shuffle(order)
    used: dict[int, set[int]] = {}
    out = BuiltTriples([])
    for u, v in order:
        s, o = (u, v) if rng.random() < 0.5 else (v, u)
        used_s = used.setdefault(s, set())
        r = _free_relation(rng, used_s, n_relations)
        if r is None:
            s, o = o, s
            used_s = used.setdefault(s, set())
            r = _free_relation(rng, used_s, n_relations)
            if r is None:
                out.dropped_edges += 1
                continue
            out.flipped_edges += 1
        used_s.add(r)
        out.triples.append((s, r, o))
    return out


def attribute_triples(subjects: list[int], relation_ids: list[int], values: list[int], seed: int
                      ) -> list[tuple[int, int, int]]:
    """One fact per (subject, attribute relation), object drawn uniformly from the shared value pool."""
    rng = random.Random(seed)
    return [(s, r, values[rng.randrange(len(values))]) for s in subjects for r in relation_ids]
