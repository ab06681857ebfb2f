"""synth_kg: seeded synthetic knowledge graphs with functional relations, templates and a training corpus."""

from synth_kg.generate import KGConfig, generate, library_versions
from synth_kg.graph import FORMAT, Entity, KnowledgeGraph, Triple
from synth_kg.popularity import gini, rank_quantile_bins
from synth_kg.probes import PROBE_GROUPS, ProbeIndex
from synth_kg.relations import Relation

__all__ = [
    "FORMAT",
    "PROBE_GROUPS",
    "Entity",
    "KGConfig",
    "KnowledgeGraph",
    "ProbeIndex",
    "Relation",
    "Triple",
    "generate",
    "gini",
    "library_versions",
    "rank_quantile_bins",
]
