"""`KGConfig` and `generate()`: topology → connected graph → functional triples → names → KnowledgeGraph.

`text_format="sro"` (DESIGN §13) builds the very same graph, triples and names as the natural format with
the same seed and graph flags (names drawn against the natural templates' words), then writes every entity
as one token (the name with spaces turned into underscores, "Maria_Lopez") and every relation as one token
(its name, "best_friend"), with the single template `{s} TOKEN {o}` and no held-out template. The
template-count flags are ignored there (recorded as 1 and 0). A natural-format config records no
`text_format` key, so natural bundles keep the bytes they had before the option existed.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass

from synth_kg.errors import UserError
from synth_kg.build import attribute_triples, edges_to_triples
from synth_kg.corpus import EXPOSURES, sub_seed
from synth_kg.graph import KnowledgeGraph
from synth_kg.types import TEXT_FORMATS, Entity, Triple
from synth_kg.names import NameRegistry, person_names, place_names
from synth_kg.relations import make_relations, to_sro, vocabulary
from synth_kg.topology import TOPOLOGIES, connect, make_graph


@dataclass
class KGConfig:
    topology: str = "ba"
    entities: int = 200
    relations: int | str = 50  # or "auto": enough for the graph's largest degree
    seed: int = 0
    ba_m: int = 3
    edges: int | None = None  # er / powerlaw; None = BA's edge count at the same size
    exponent: float = 2.5  # powerlaw: P(k) ∝ k^-exponent (smaller = more skew)
    templates_per_relation: int = 3
    heldout_per_relation: int = 1
    attribute_relations: int = 0
    attribute_pool: int = 10
    exposure: str = "uniform"  # "uniform" | "popularity"
    repeats: int = 1
    singletons: str = "reattach"  # nodes outside the giant component: "reattach" | "drop"
    text_format: str = "natural"  # "natural" | "sro" (one token per entity and relation, a fact is "s r o")

    def validate(self) -> None:
        def is_int(x) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        if self.topology not in TOPOLOGIES:
            raise UserError(f"unknown topology {self.topology!r}: use one of {', '.join(TOPOLOGIES)}")
        if not is_int(self.seed) or self.seed < 0:
            raise UserError(f"--seed must be an integer >= 0, got {self.seed!r}")
        if not is_int(self.entities) or self.entities < 2:
            raise UserError(f"--entities must be an integer >= 2, got {self.entities!r}")
        if self.relations != "auto" and (not is_int(self.relations) or self.relations < 1):
            raise UserError(f"--relations must be 'auto' or an integer >= 1, got {self.relations!r}")
        if not is_int(self.ba_m) or self.ba_m < 1:
            raise UserError(f"--ba-m must be an integer >= 1, got {self.ba_m!r}")
        if self.edges is not None and (not is_int(self.edges) or self.edges < 1):
            raise UserError(f"--edges must be an integer >= 1, got {self.edges!r}")
        if not isinstance(self.exponent, (int, float)) or not self.exponent > 1:
            raise UserError(f"--exponent must be > 1, got {self.exponent!r}")
        if self.exposure not in EXPOSURES:
            raise UserError(f"unknown exposure {self.exposure!r}: use {' or '.join(EXPOSURES)}")
        if not is_int(self.repeats) or self.repeats < 1:
            raise UserError(f"--repeats must be an integer >= 1, got {self.repeats!r}")
        if not is_int(self.attribute_relations) or self.attribute_relations < 0:
            raise UserError(f"--attribute-relations must be an integer >= 0, got {self.attribute_relations!r}")
        if self.attribute_relations and (not is_int(self.attribute_pool) or self.attribute_pool < 1):
            raise UserError(f"--attribute-pool must be an integer >= 1, got {self.attribute_pool!r}")
        if self.singletons not in ("reattach", "drop"):
            raise UserError(f"unknown singleton mode {self.singletons!r}: use reattach or drop")
        if self.text_format not in TEXT_FORMATS:
            raise UserError(f"unknown format {self.text_format!r}: use {' or '.join(TEXT_FORMATS)}")

    def recorded(self) -> dict:
        """The config as kg.json stores it (see the module docstring for the `text_format` rule)."""
        d = asdict(self)
        if self.text_format == "natural":
            del d["text_format"]
        else:
            d["templates_per_relation"], d["heldout_per_relation"] = 1, 0
        return d


def library_versions() -> dict:
    import faker
    import networkx

    return {"python": platform.python_version(), "networkx": networkx.__version__, "faker": faker.VERSION}


def generate(cfg: KGConfig) -> KnowledgeGraph:
    """A synthetic KG, deterministic for a given config (and library versions)."""
    cfg.validate()
    seed = cfg.seed
    raw = make_graph(cfg.topology, cfg.entities, sub_seed(seed, "topology"), cfg.ba_m, cfg.edges, cfg.exponent)
    conn = connect(raw, cfg.singletons, sub_seed(seed, "connect"))
    graph = conn.graph
    max_degree = max((d for _, d in graph.degree()), default=1)
    n_rel = max(1, max_degree) if cfg.relations == "auto" else cfg.relations
    sro = cfg.text_format == "sro"
    relations = make_relations(n_rel, cfg.attribute_relations, 3 if sro else cfg.templates_per_relation,
                               1 if sro else cfg.heldout_per_relation)

    built = edges_to_triples(list(graph.edges()), n_rel, sub_seed(seed, "edges"))
    # Nodes left without any fact (possible only when edges were dropped) are dropped too.
    used_nodes = sorted({u for s, _, o in built.triples for u in (s, o)})
    dropped = list(conn.dropped)
    for u in sorted(set(graph.nodes()) - set(used_nodes)):
        dropped.append({"node": u, "reason": "no fact left after functional assignment"})
    dropped.sort(key=lambda d: d["node"])
    new_id = {u: i for i, u in enumerate(used_nodes)}

    registry = NameRegistry(vocabulary(relations))
    names = person_names(len(used_nodes), sub_seed(seed, "names"), registry)
    entity_names: list[tuple[str, str]] = [(name, "entity") for name in names]
    triples = sorted((new_id[s], r, new_id[o]) for s, r, o in built.triples)

    if cfg.attribute_relations:
        pool = place_names(cfg.attribute_pool, sub_seed(seed, "places"), registry)
        n_people = len(entity_names)
        attr_ids = [rel.id for rel in relations if rel.kind == "attribute"]
        attr = attribute_triples(list(range(n_people)), attr_ids, list(range(len(pool))), sub_seed(seed, "attributes"))
        used_values = sorted({o for _, _, o in attr})  # values no fact uses are left out (and listed)
        value_id = {v: n_people + i for i, v in enumerate(used_values)}
        entity_names += [(pool[v], "value") for v in used_values]
        dropped += [{"value": pool[v], "reason": "attribute value used by no fact"}
                    for v in range(len(pool)) if v not in value_id]
        triples += [(s, r, value_id[o]) for s, r, o in attr]

    if sro:
        entity_names = [("_".join(name.split()), kind) for name, kind in entity_names]
        relations = to_sro(relations)
    parts = [Entity(i, name, 0, 0, 0, kind) for i, (name, kind) in enumerate(entity_names)]
    generation = {
        "relations": n_rel,
        "attribute_relations": cfg.attribute_relations,
        "graph_nodes": raw.number_of_nodes(),
        "graph_edges": raw.number_of_edges(),
        "edges_after_connect": graph.number_of_edges(),
        "reattached": conn.reattached,
        "flipped_edges": built.flipped_edges,
        "dropped_edges": built.dropped_edges,
        "max_graph_degree": max_degree,
    }
    return KnowledgeGraph.from_parts(parts, relations, [Triple(i, *t) for i, t in enumerate(triples)],
                                     config=cfg.recorded(), seed=seed, dropped=dropped,
                                     versions=library_versions(), generation=generation)
