"""Popularity bins and probe groups of a list of facts: defined once, for a KG bundle and a facts file alike.

Every input becomes a `FactIndex`: per fact a (subject, relation, object) key triple, and per entity key
its popularity and its id.

- KG bundle (`KnowledgeGraph.fact_index()`): keys = entity ids, popularity = degree, id = entity id.
- Facts file (`kdel.facts.FactTable`): keys = normalised surface forms (`surface_key`), popularity = the
  line's `popularity` field or the number of lines mentioning the entity, id = the file's `subject_id` /
  `object_id` fields when every line has them (`kdel kg export-facts` writes them), else the order of first
  appearance (`first_appearance_ids`). A KG bundle seen as a facts table keeps its entity ids.

Popularity bins (DESIGN §12): rank quantiles over the facts of the subject's (or object's) popularity,
ties broken by entity id, so all facts of one entity share a bin (`rank_quantile_bins`).
Probe groups (DESIGN §1, §12): `ProbeIndex` over the keys, with `paraphrase` empty for a fact that has no
held-out prompts (the `sro` format, a facts file without paraphrases).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from functools import cached_property

from synth_kg.popularity import rank_quantile_bins
from synth_kg.probes import ProbeIndex

Key = Hashable


def surface_key(text: str) -> str:
    """The normalised surface form that identifies an entity given as text: leading and trailing whitespace
    stripped, so a target " Madrid" is the entity "Madrid". Case is kept ("madrid" is another entity), and
    inner whitespace is left as written."""
    return text.strip()


def first_appearance_ids(triples: Iterable[tuple[Key, Key | None, Key]]) -> dict[Key, int]:
    """Entity id = order of first appearance, reading the facts in order, a fact's subject before its object."""
    ids: dict[Key, int] = {}
    for s, _, o in triples:
        for key in (s, o):
            if key not in ids:
                ids[key] = len(ids)
    return ids


class FactIndex:
    """Bins and probe groups over fact keys (see the module docstring for what the keys are)."""

    def __init__(self, triples: Sequence[tuple[Key, Key | None, Key]], popularity: Mapping[Key, float],
                 ids: Mapping[Key, int], paraphrased: Sequence[bool] | None = None):
        self.triples = [tuple(t) for t in triples]
        self.popularity = dict(popularity)
        self.ids = dict(ids)
        self.paraphrased = list(paraphrased) if paraphrased is not None else [True] * len(self.triples)
        if len(self.paraphrased) != len(self.triples):
            raise ValueError("paraphrased must have one entry per fact")
        for s, _, o in self.triples:
            for key in (s, o):
                if key not in self.popularity or key not in self.ids:
                    raise ValueError(f"entity {key!r} has no popularity or no id")

    # ------------------------------------------------------------------------------------- popularity
    def _bins(self, keys: Sequence[Key], n_bins: int) -> list[int]:
        return rank_quantile_bins([self.popularity[k] for k in keys], n_bins, tiebreak=[self.ids[k] for k in keys])

    def subject_bins(self, n_bins: int = 5) -> list[int]:
        """Popularity bin of each fact's subject: rank quantiles over the facts, ties by entity id."""
        return self._bins([s for s, _, _ in self.triples], n_bins)

    def object_bins(self, n_bins: int = 5) -> list[int]:
        """Popularity bin of each fact's object: rank quantiles over the facts, ties by entity id."""
        return self._bins([o for _, _, o in self.triples], n_bins)

    def entity_bins(self, n_bins: int = 5, keys: Sequence[Key] | None = None) -> list[int]:
        """Popularity bin of each entity of `keys` (default: every entity, in id order), ranked over them."""
        keys = sorted(self.ids, key=self.ids.__getitem__) if keys is None else list(keys)
        return self._bins(keys, n_bins)

    # ----------------------------------------------------------------------------------------- probes
    @cached_property
    def probes(self) -> ProbeIndex:
        return ProbeIndex.build(self.triples)

    def unrelated_sample(self, size: int = 200, seed: int = 0) -> list[int]:
        """The run's fixed random sample of fact indices from which `unrelated` probes are taken."""
        return self.probes.unrelated_sample(size, seed)

    def groups(self, index: int, unrelated_pool: Sequence[int] = ()) -> dict[str, list[int]]:
        """Every probe group of fact `index` (DESIGN §1), disjoint by the precedence of §12."""
        out = self.probes.groups(index, unrelated_pool)
        if not self.paraphrased[index]:
            out["paraphrase"] = []
        return out
