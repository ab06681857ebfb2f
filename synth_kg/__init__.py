"""synth_kg: seeded synthetic knowledge graphs with functional relations, templates and a training corpus.

Stands alone: nothing here imports kdel. Importing the package is light (networkx and Faker load when a
graph is generated), because `kdel.errors` imports `synth_kg.errors`.
"""

from synth_kg.errors import UserError
from synth_kg.generate import KGConfig, generate, library_versions
from synth_kg.graph import KnowledgeGraph
from synth_kg.index import FactIndex, surface_key
from synth_kg.popularity import gini, rank_quantile_bins
from synth_kg.probes import PROBE_GROUPS, ProbeIndex
from synth_kg.provenance import VERSION as __version__
from synth_kg.relations import Relation
from synth_kg.types import FORMAT, TEXT_FORMATS, Entity, Triple

__all__ = [
    "FORMAT",
    "PROBE_GROUPS",
    "TEXT_FORMATS",
    "Entity",
    "FactIndex",
    "KGConfig",
    "KnowledgeGraph",
    "ProbeIndex",
    "Relation",
    "Triple",
    "UserError",
    "generate",
    "gini",
    "library_versions",
    "rank_quantile_bins",
    "surface_key",
]
