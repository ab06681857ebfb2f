"""Undirected graph topologies (networkx) and the handling of disconnected nodes (DESIGN §2).

- `ba`: Barabási–Albert with parameter m (m·(n−m) edges).
- `er`: Erdős–Rényi G(n, M); M defaults to BA's edge count at the same n and m, so the two differ in
  topology only.
- `powerlaw`: a configuration-style Chung–Lu graph (networkx `expected_degree_graph`) whose expected
  degrees follow a power law with exponent γ (P(k) ∝ k^−γ); smaller γ = more skew. Its expected edge
  count also defaults to BA's.
Nodes outside the largest connected component are either re-attached (one edge from a random member of
each small component to a random node of the giant component) or dropped; the caller records which.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from synth_kg.errors import UserError

TOPOLOGIES = ("ba", "er", "powerlaw")


def ba_edge_count(n: int, m: int) -> int:
    return m * (n - m)


def default_edges(n: int, m: int) -> int:
    """BA's edge count at this size, capped by a simple graph's maximum."""
    return min(ba_edge_count(n, m), n * (n - 1) // 2)


def _powerlaw_weights(n: int, edges: int, exponent: float) -> list[float]:
    """Chung–Lu weights w_i ∝ (i + 1)^(−1/(γ−1)), scaled so that they sum to 2·edges."""
    alpha = 1.0 / (exponent - 1.0)
    raw = [(i + 1) ** (-alpha) for i in range(n)]
    scale = 2.0 * edges / sum(raw)
    return [w * scale for w in raw]


def make_graph(topology: str, n: int, seed: int, m: int = 3, edges: int | None = None,
               exponent: float = 2.5):
    """The raw undirected `networkx.Graph` on nodes 0..n-1 (before singleton handling)."""
    import networkx as nx  # imported here: `import synth_kg` stays light

    if topology not in TOPOLOGIES:
        raise UserError(f"unknown topology {topology!r}: use one of {', '.join(TOPOLOGIES)}")
    if n < 2:
        raise UserError(f"--entities must be >= 2, got {n}")
    max_edges = n * (n - 1) // 2
    if topology == "ba":
        if not 1 <= m < n:
            raise UserError(f"--ba-m must be between 1 and entities-1 ({n - 1}), got {m}")
        return nx.barabasi_albert_graph(n, m, seed=seed)
    if edges is None:
        if not 1 <= m < n:
            raise UserError(f"--ba-m must be between 1 and entities-1 ({n - 1}), got {m} (it sets the default --edges)")
        edges = default_edges(n, m)
    if not 1 <= edges <= max_edges:
        raise UserError(f"--edges must be between 1 and {max_edges} for {n} entities, got {edges}")
    if topology == "er":
        return nx.gnm_random_graph(n, edges, seed=seed)
    if not exponent > 1.0:
        raise UserError(f"--exponent must be > 1, got {exponent}")
    g = nx.expected_degree_graph(_powerlaw_weights(n, edges, exponent), seed=seed, selfloops=False)
    return nx.Graph(g)


@dataclass
class Connected:
    graph: Any  # networkx.Graph
    dropped: list[dict] = field(default_factory=list)  # {"node": int, "reason": str}
    reattached: list[dict] = field(default_factory=list)  # {"node": int, "to": int}


def connect(graph, mode: str, seed: int) -> Connected:
    """Re-attach (mode 'reattach') or drop (mode 'drop') every node outside the largest component."""
    import networkx as nx

    if mode not in ("reattach", "drop"):
        raise UserError(f"unknown singleton mode {mode!r}: use reattach or drop")
    comps = sorted((sorted(c) for c in nx.connected_components(graph)), key=lambda c: (-len(c), c[0]))
    if len(comps) <= 1:
        return Connected(graph)
    giant, rest = comps[0], comps[1:]
    g = graph.copy()
    out = Connected(g)
    rng = random.Random(seed)
    for comp in rest:
        reason = "singleton" if len(comp) == 1 else f"component of {len(comp)} nodes"
        if mode == "drop":
            g.remove_nodes_from(comp)
            out.dropped.extend({"node": u, "reason": reason} for u in comp)
        else:
            u = comp[rng.randrange(len(comp))]
            v = giant[rng.randrange(len(giant))]
            g.add_edge(u, v)
            out.reattached.append({"node": u, "to": v, "reason": reason})
    return out
