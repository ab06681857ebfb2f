"""The retain set of gradient unlearning (GA, NPO, FT's optional KL term): facts far from the deleted ones.

DESIGN §12: the retain set excludes the case's probe groups. We drop every fact that falls in any probe
group of any deleted fact (target, paraphrase, same_subject, same_object, subject_as_object, neighbours at
1 and 2 hops, same_relation) and, when the run's fixed `unrelated` sample is known, that sample too, so
that the facts the audit measures collateral damage on are never trained on. What remains is sampled
with a seed, up to `size` facts. On a small, dense KG little may remain (possibly nothing): callers then
run without a retain term and record that.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from kdel.facts import Fact, FactTable


def excluded_fact_ids(table: FactTable, deleted: Sequence[Fact], unrelated_pool: Sequence[int] | None = None) -> set[int]:
    """Ids of every fact in a probe group of a deleted fact, plus the run's unrelated sample."""
    out: set[int] = set(unrelated_pool or ())
    for f in deleted:
        for ids in table.probe_groups(f.id, []).values():
            out.update(ids)
    return out


def select_retain_facts(
    table: FactTable,
    deleted: Sequence[Fact],
    size: int,
    seed: int = 0,
    unrelated_pool: Sequence[int] | None = None,
) -> list[Fact]:
    """A seeded sample (sorted by id) of up to `size` facts outside the deleted facts' probe groups."""
    if size <= 0:
        return []
    excluded = excluded_fact_ids(table, deleted, unrelated_pool)
    eligible = [f.id for f in table.facts if f.id not in excluded]
    picked = sorted(random.Random(seed).sample(eligible, min(size, len(eligible))))
    return [table.facts[i] for i in picked]


def unrelated_pool_of(ctx) -> list[int] | None:
    """The run's fixed unrelated sample if the caller attached one to the edit context (`ctx.unrelated_pool`)."""
    pool = ctx.unrelated_pool
    return list(pool) if pool is not None else None
