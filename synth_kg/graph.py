"""The `KnowledgeGraph`: entities, functional relations, triples, and every lookup the pipeline needs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from synth_kg import bundle
from synth_kg.atomic import dumps_json, sha256_text
from synth_kg.corpus import EXPOSURES, corpus_lines, fact_counts, prompt_of, render
from synth_kg.errors import UserError
from synth_kg.index import FactIndex
from synth_kg.relations import Relation, check_sro_template, check_template
from synth_kg.types import FORMAT, TEXT_FORMATS, Entity, Triple

__all__ = ["FORMAT", "Entity", "KnowledgeGraph", "Triple"]


def _degrees(n: int, triples: Iterable[Triple]) -> tuple[list[int], list[int]]:
    ins, outs = [0] * n, [0] * n
    for t in triples:
        outs[t.subject] += 1
        ins[t.object] += 1
    return ins, outs


class KnowledgeGraph:
    """A validated KG. Ids of entities, relations and triples equal their positions in the lists."""

    def __init__(self, entities: Sequence[Entity], relations: Sequence[Relation], triples: Sequence[Triple],
                 config: dict | None = None, seed: int = 0, dropped: list | None = None,
                 versions: dict | None = None, generation: dict | None = None):
        self.entities: list[Entity] = list(entities)
        self.relations: list[Relation] = list(relations)
        self.triples: list[Triple] = list(triples)
        self.config: dict = dict(config or {})
        self.config.setdefault("exposure", "uniform")
        self.config.setdefault("repeats", 1)
        self.seed = int(seed)
        self.dropped: list = list(dropped or [])
        self.versions: dict = dict(versions or {})
        self.generation: dict = dict(generation or {})
        self._validate()
        self._by_name = {e.name: e.id for e in self.entities}
        self._fact_index: FactIndex | None = None
        self._unrelated: dict[tuple[int, int], list[int]] = {}
        self._corpus: list[str] | None = None
        self._exposure: list[int] | None = None

    # ----------------------------------------------------------------------------------- construction
    @classmethod
    def from_parts(cls, entities: Sequence[Entity | str], relations: Sequence[Relation],
                   triples: Sequence[Triple | tuple[int, int, int]], **kwargs: Any) -> KnowledgeGraph:
        """Build from hand-made parts; entity degrees are computed from the triples (names may be plain strings)."""
        ts = [t if isinstance(t, Triple) else Triple(i, *t) for i, t in enumerate(triples)]
        n = len(entities)
        for t in ts:
            for e in (t.subject, t.object):
                if not (isinstance(e, int) and 0 <= e < n):
                    raise UserError(f"triple {t.id} refers to unknown entity id {e}")
        ins, outs = _degrees(n, ts)
        es = []
        for i, e in enumerate(entities):
            name, kind = (e, "entity") if isinstance(e, str) else (e.name, e.kind)
            es.append(Entity(i, name, ins[i] + outs[i], ins[i], outs[i], kind))
        return cls(es, relations, ts, **kwargs)

    def _validate(self) -> None:
        for what, items in (("entity", self.entities), ("relation", self.relations), ("triple", self.triples)):
            for pos, item in enumerate(items):
                if item.id != pos:
                    raise UserError(f"{what} ids must equal their positions 0..n-1: {what} #{pos} has id {item.id!r}")
        names: dict[str, int] = {}
        for e in self.entities:
            if not isinstance(e.name, str) or not e.name.strip():
                raise UserError(f"entity {e.id} has an empty or non-text name")
            if e.name in names:
                raise UserError(f"entity name {e.name!r} is used by entities {names[e.name]} and {e.id}: names must be unique")
            names[e.name] = e.id
            if e.kind not in ("entity", "value"):
                raise UserError(f"entity {e.id} has unknown kind {e.kind!r} (expected entity or value)")
        if self.text_format not in TEXT_FORMATS:
            raise UserError(f"unknown text format {self.text_format!r}: use {' or '.join(TEXT_FORMATS)}")
        if self.text_format == "sro":
            self._validate_sro()
        else:
            for r in self.relations:
                if not r.templates or not r.heldout_templates:
                    raise UserError(f"relation {r.id} ({r.name}) needs at least one training and one held-out template")
                for t in r.templates + r.heldout_templates:
                    problem = check_template(t) if isinstance(t, str) else f"template {t!r} is not text"
                    if problem:
                        raise UserError(f"relation {r.id} ({r.name}): {problem}")
        n_e, n_r = len(self.entities), len(self.relations)
        seen: dict[tuple[int, int], int] = {}
        for t in self.triples:
            for e in (t.subject, t.object):
                if not (isinstance(e, int) and 0 <= e < n_e):
                    raise UserError(f"triple {t.id} refers to unknown entity id {e!r}")
            if not (isinstance(t.relation, int) and 0 <= t.relation < n_r):
                raise UserError(f"triple {t.id} refers to unknown relation id {t.relation!r}")
            key = (t.subject, t.relation)
            if key in seen:
                raise UserError(f"duplicate (subject, relation) = {key} in triples {seen[key]} and {t.id}: "
                                "relations must be functional")
            seen[key] = t.id
        ins, outs = _degrees(n_e, self.triples)
        for e in self.entities:
            if (e.in_degree, e.out_degree, e.degree) != (ins[e.id], outs[e.id], ins[e.id] + outs[e.id]):
                raise UserError(f"entity {e.id} ({e.name}) has degrees {e.degree}/{e.in_degree}/{e.out_degree} "
                                f"but the triples give {ins[e.id] + outs[e.id]}/{ins[e.id]}/{outs[e.id]}")
        if self.config["exposure"] not in EXPOSURES:
            raise UserError(f"unknown exposure {self.config['exposure']!r}: use {' or '.join(EXPOSURES)}")
        if not isinstance(self.config["repeats"], int) or self.config["repeats"] < 1:
            raise UserError(f"repeats must be an integer >= 1, got {self.config['repeats']!r}")

    def _validate_sro(self) -> None:
        """`sro`: each entity name and each relation is one whitespace-free token, all distinct; one
        template `{s} TOKEN {o}` per relation and no held-out template."""
        for e in self.entities:
            if len(e.name.split()) != 1 or e.name != e.name.strip():
                raise UserError(f"entity {e.id} name {e.name!r} must be one token (no whitespace) in the sro format")
        names = {e.name for e in self.entities}
        tokens: dict[str, int] = {}
        for r in self.relations:
            if len(r.templates) != 1 or r.heldout_templates:
                raise UserError(f"relation {r.id} ({r.name}) must have exactly one template and no held-out "
                                "template in the sro format")
            problem, token = check_sro_template(r.templates[0]) if isinstance(r.templates[0], str) else (
                f"template {r.templates[0]!r} is not text", None)
            if problem:
                raise UserError(f"relation {r.id} ({r.name}): {problem}")
            if token in names or token in tokens:
                raise UserError(f"relation {r.id} token {token!r} is also "
                                f"{'an entity name' if token in names else f'relation {tokens[token]}'}")
            tokens[token] = r.id

    @property
    def text_format(self) -> str:
        """How facts are written as text: "natural" (templates) or "sro" (one token each, DESIGN §13)."""
        return self.config.get("text_format", "natural")

    # ---------------------------------------------------------------------------------------- lookups
    def entity(self, eid: int) -> Entity:
        return self.entities[self._check_id(eid, len(self.entities), "entity")]

    def relation(self, rid: int) -> Relation:
        return self.relations[self._check_id(rid, len(self.relations), "relation")]

    def triple(self, tid: int) -> Triple:
        return self.triples[self._check_id(tid, len(self.triples), "fact")]

    @staticmethod
    def _check_id(i: int, n: int, what: str) -> int:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
            raise UserError(f"unknown {what} id {i!r} (this KG has ids 0..{n - 1})")
        return i

    def entity_by_name(self, name: str) -> Entity:
        if name not in self._by_name:
            raise UserError(f"no entity named {name!r} in this KG")
        return self.entities[self._by_name[name]]

    def subject_name(self, tid: int) -> str:
        return self.entities[self.triple(tid).subject].name

    def object_name(self, tid: int) -> str:
        return self.entities[self.triple(tid).object].name

    def degree(self, eid: int) -> int:
        return self.entity(eid).degree

    def facts_of(self, eid: int) -> list[int]:
        """Ids of the facts that mention entity `eid` (as subject or object)."""
        self.entity(eid)
        return [t.id for t in self.triples if t.subject == eid or t.object == eid]

    # ------------------------------------------------------------------------------------------- text
    def prompts(self, tid: int) -> list[str]:
        t = self.triple(tid)
        return [prompt_of(tpl, self.entities[t.subject].name) for tpl in self.relations[t.relation].templates]

    def paraphrase_prompts(self, tid: int) -> list[str]:
        t = self.triple(tid)
        s = self.entities[t.subject].name
        return [prompt_of(tpl, s) for tpl in self.relations[t.relation].heldout_templates]

    def sentences(self, tid: int) -> list[str]:
        t = self.triple(tid)
        s, o = self.entities[t.subject].name, self.entities[t.object].name
        return [render(tpl, s, o) for tpl in self.relations[t.relation].templates]

    def fact_counts(self) -> list[int]:
        """How many times each fact is written into the corpus (each time with every training template)."""
        return fact_counts(self.config["exposure"], self.config["repeats"],
                           [self.entities[t.subject].degree for t in self.triples])

    def corpus_lines(self) -> list[str]:
        if self._corpus is None:
            facts = [(self.entities[t.subject].name, self.entities[t.object].name,
                      self.relations[t.relation].templates) for t in self.triples]
            self._corpus = corpus_lines(facts, self.fact_counts(), self.seed)
        return list(self._corpus)

    def exposure(self, eid: int) -> int:
        """How many corpus lines mention entity `eid`."""
        if self._exposure is None:
            counts = [0] * len(self.entities)
            for t, c in zip(self.triples, self.fact_counts()):
                k = c * len(self.relations[t.relation].templates)
                counts[t.subject] += k
                if t.object != t.subject:
                    counts[t.object] += k
            self._exposure = counts
        return self._exposure[self.entity(eid).id]

    # ------------------------------------------------------------------------ popularity and probes
    def fact_index(self) -> FactIndex:
        """Bins and probe groups over entity ids (degree = popularity, ties by id): `synth_kg.index`."""
        if self._fact_index is None:
            self._fact_index = FactIndex(
                [(t.subject, t.relation, t.object) for t in self.triples],
                popularity={e.id: e.degree for e in self.entities}, ids={e.id: e.id for e in self.entities},
                paraphrased=[bool(self.relations[t.relation].heldout_templates) for t in self.triples])
        return self._fact_index

    def subject_bins(self, n_bins: int = 5) -> list[int]:
        """Popularity bin of each fact's subject: rank quantiles of degree over the facts, ties by entity id."""
        return self.fact_index().subject_bins(n_bins)

    def object_bins(self, n_bins: int = 5) -> list[int]:
        return self.fact_index().object_bins(n_bins)

    def degree_bins(self, n_bins: int = 5) -> list[int]:
        """Popularity bin of each entity (rank quantiles of degree over entities, ties by id)."""
        return self.fact_index().entity_bins(n_bins, keys=[e.id for e in self.entities])

    def unrelated_pool(self, size: int = 200, seed: int = 0) -> list[int]:
        """The run's fixed random sample of fact ids from which `unrelated` probes are taken."""
        key = (size, seed)
        if key not in self._unrelated:
            self._unrelated[key] = self.fact_index().unrelated_sample(size, seed)
        return self._unrelated[key]

    def probe_groups(self, tid: int, unrelated_size: int = 200, seed: int = 0) -> dict[str, list[int]]:
        """Fact ids of every probe group of fact `tid` (DESIGN §1), disjoint by the precedence of §12."""
        self.triple(tid)
        return self.fact_index().groups(tid, self.unrelated_pool(unrelated_size, seed))

    # ---------------------------------------------------------------------------------------- exports
    def to_networkx(self):
        """A directed multigraph: node = entity id (attrs name, kind, degrees), edge key = triple id."""
        import networkx as nx

        g = nx.MultiDiGraph()
        for e in self.entities:
            g.add_node(e.id, name=e.name, kind=e.kind, degree=e.degree, in_degree=e.in_degree,
                       out_degree=e.out_degree)
        for t in self.triples:
            g.add_edge(t.subject, t.object, key=t.id, relation=t.relation, triple=t.id,
                       relation_name=self.relations[t.relation].name)
        return g

    def to_dict(self) -> dict:
        """The kg.json object (`kdel-kg/1`)."""
        return bundle.to_dict(self)

    @classmethod
    def from_dict(cls, obj: dict) -> KnowledgeGraph:
        """A validated graph from a kg.json object (UserError naming the problem)."""
        return cls(**bundle.parts_from_dict(obj))

    def content_hash(self) -> str:
        return sha256_text(dumps_json(self.to_dict()))

    def save(self, directory: str | Path) -> Path:
        """Write the bundle atomically (a whole new bundle or the old one, never a mix)."""
        return bundle.save(self, directory)

    @classmethod
    def load(cls, directory: str | Path) -> KnowledgeGraph:
        """Read and validate a bundle; any problem is a `UserError` naming the file."""
        path, obj = bundle.read_kg_json(directory)
        try:
            return cls.from_dict(obj)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None

    def __repr__(self) -> str:
        return (f"KnowledgeGraph({len(self.entities)} entities, {len(self.relations)} relations, "
                f"{len(self.triples)} triples, seed={self.seed})")
