"""Every fact of one entity: who the entity is, which facts go, and the probe groups relative to it.

An entity is named by its surface name (`--subject NAME`, a KG bundle or a facts file) or by its KG entity id
(`--entity ID`, KG bundles only). Its facts are those whose subject it is; with `as_object` also those whose
object it is ("the mentor of X is <entity>").

Probe groups relative to the entity, disjoint by this precedence (a fact belongs to the first that matches):
  entity            the deleted facts, on every training prompt: they must go
  paraphrase        the deleted facts on their held-out prompts (only facts recalled there before count)
  knowledge_holes   facts of other entities whose object is the entity (not deleted unless `as_object`):
                    what the model may lose about others when it loses the entity
  neighbors_1hop    facts whose subject is at graph distance 1 from the entity (undirected view)
  neighbors_2hop    ... at distance 2
  same_relation     facts of a relation of a deleted fact, with another subject
  unrelated         the run's fixed unrelated sample, less the facts in a group above
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass

from kdel.errors import UserError

ENTITY_GROUPS = ("entity", "paraphrase", "knowledge_holes", "neighbors_1hop", "neighbors_2hop", "same_relation",
                 "unrelated")


@dataclass(frozen=True)
class Entity:
    name: str
    id: int | None  # the KG entity id; None for a facts file
    degree: float  # popularity: KG degree, or a facts file's popularity (given, else its number of mentions)
    in_degree: int | None = None  # KG only
    out_degree: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _facts_popularity(table, name: str) -> float:
    for f in table.facts:
        if f.subject == name:
            return float(f.subject_popularity)
        if f.target == name:
            return float(f.object_popularity)
    return 0.0


def resolve_entity(table, subject: str | None = None, entity_id: int | None = None) -> Entity:
    """The entity named by exactly one of `subject` (its name) or `entity_id` (a KG entity id)."""
    if (subject is None) == (entity_id is None):
        raise UserError("give exactly one of --subject NAME or --entity ID")
    if entity_id is not None:
        if table.kg is None:
            raise UserError("--entity ID needs --kg (a facts file has no entity ids); name the entity with --subject")
        kg = table.kg
        if not 0 <= entity_id < len(kg.entities):
            raise UserError(f"entity {entity_id} does not exist: valid ids are 0..{len(kg.entities) - 1}")
        e = kg.entity(entity_id)
        return Entity(e.name, e.id, float(e.degree), e.in_degree, e.out_degree)
    name = " ".join(subject.split())
    if not name:
        raise UserError("--subject is empty")
    index = table.probe_index
    if name not in index.by_subject and name not in index.by_object:
        close = difflib.get_close_matches(name, table.entity_names, n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise UserError(f"no fact mentions {name!r}{hint}")
    if table.kg is not None:
        e = table.kg.entity_by_name(name)
        return Entity(e.name, e.id, float(e.degree), e.in_degree, e.out_degree)
    return Entity(name, None, _facts_popularity(table, name))


def entity_fact_ids(table, name: str, as_object: bool = False) -> list[int]:
    """Ids of the facts whose subject is `name` (and, with `as_object`, whose object is), sorted."""
    index = table.probe_index
    ids = set(index.by_subject.get(name, ()))
    if as_object:
        ids |= set(index.by_object.get(name, ()))
    if not ids:
        extra = "" if as_object else " (--as-object also deletes the facts where it is the object)"
        raise UserError(f"{name!r} is the subject of no fact{extra}")
    return sorted(ids)


def fact_role(fact, name: str) -> str:
    """'subject' when the entity is the fact's subject, else 'object'."""
    return "subject" if fact.subject == name else "object"


def entity_probe_groups(table, name: str, deleted: list[int], unrelated_pool: list[int]) -> dict[str, list[int]]:
    """Fact ids of every probe group relative to the entity (module docstring), disjoint by precedence."""
    index = table.probe_index
    taken = set(deleted)
    out: dict[str, list[int]] = {"entity": sorted(deleted), "paraphrase": sorted(deleted)}

    def claim(group: str, candidates) -> None:
        picked = sorted({i for i in candidates if i not in taken})
        taken.update(picked)
        out[group] = picked

    claim("knowledge_holes", index.by_object.get(name, ()))
    dist = index.distances_from(name, 2)
    claim("neighbors_1hop", [i for node, d in dist.items() if d == 1 for i in index.by_subject.get(node, ())])
    claim("neighbors_2hop", [i for node, d in dist.items() if d == 2 for i in index.by_subject.get(node, ())])
    relations = {table.facts[i].relation for i in deleted} - {None}
    claim("same_relation", [i for r in sorted(relations) for i in index.by_relation.get(r, ())])
    claim("unrelated", unrelated_pool)
    return out
