"""How many facts change popularity bin with the shared tie-break (degree, then entity id) against the
tie-break kdel/facts.py used before (degree, then name), on the KGs of the default, quick and paper settings.

    python experiments/bench/bins_tiebreak.py [--bins 5]

Prints a markdown table (docs/synth_kg.md cites it).
"""

from __future__ import annotations

import argparse

from kdel.facts import FactTable
from synth_kg import KGConfig, generate
from synth_kg.popularity import rank_quantile_bins

SETTINGS = [
    ("default / paper, ba", KGConfig()),
    ("default / paper, er", KGConfig(topology="er")),
    ("quick, ba", KGConfig(entities=60, relations="auto")),
    ("quick, er", KGConfig(topology="er", entities=60, relations="auto")),
]


def by_name(table: FactTable, n_bins: int) -> tuple[list[int], list[int]]:
    """The bins of the code before the change: ties broken by the entity's name."""
    return (rank_quantile_bins([f.subject_popularity for f in table.facts], n_bins, [f.subject for f in table.facts]),
            rank_quantile_bins([f.object_popularity for f in table.facts], n_bins, [f.target for f in table.facts]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bins", type=int, default=5)
    args = ap.parse_args()
    print("| KG (seed 0) | facts | subject bin changed | object bin changed |")
    print("|---|---|---|---|")
    for name, cfg in SETTINGS:
        table = FactTable.from_kg(generate(cfg))
        old_s, old_o = by_name(table, args.bins)
        new_s, new_o = table.subject_bins(args.bins), table.object_bins(args.bins)
        print(f"| {name} | {len(table.facts)} | {sum(a != b for a, b in zip(old_s, new_s))} "
              f"| {sum(a != b for a, b in zip(old_o, new_o))} |")


if __name__ == "__main__":
    main()
