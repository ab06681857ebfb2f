"""The plain records of a KG (entities, triples) and the format names; no logic, no imports."""

from __future__ import annotations

from dataclasses import dataclass

FORMAT = "kdel-kg/1"

# How facts are written as text (DESIGN §13). "natural": several English templates per relation plus
# held-out paraphrase templates. "sro": every entity and every relation is one word-level token and a
# fact is the sentence "s r o" (one template per relation, no held-out templates).
TEXT_FORMATS: tuple[str, ...] = ("natural", "sro")


@dataclass(frozen=True)
class Entity:
    id: int
    name: str
    degree: int
    in_degree: int
    out_degree: int
    kind: str = "entity"  # "entity" or "value" (an attribute value, e.g. a city)


@dataclass(frozen=True)
class Triple:
    id: int
    subject: int
    relation: int
    object: int
