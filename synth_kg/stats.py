"""Summary statistics of a KG: counts, degree quantiles, hubs, and a log-log degree histogram."""

from __future__ import annotations

import io
from collections import Counter

from synth_kg.graph import KnowledgeGraph
from synth_kg.popularity import gini, quantiles

QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


def kg_stats(kg: KnowledgeGraph, top: int = 10) -> dict:
    people = [e for e in kg.entities if e.kind == "entity"]
    out = {
        "entities": len(people),
        "values": len(kg.entities) - len(people),
        "relations": len(kg.relations),
        "triples": len(kg.triples),
        "dropped_nodes": len(kg.dropped),
        "dropped_edges": kg.generation.get("dropped_edges", 0),
        "flipped_edges": kg.generation.get("flipped_edges", 0),
        "corpus_lines": sum(c * len(kg.relations[t.relation].templates) for t, c in zip(kg.triples, kg.fact_counts())),
        "degree_gini": gini([e.degree for e in people]),
        "quantiles": {
            kind: dict(zip(QUANTILES, quantiles([getattr(e, kind) for e in people], QUANTILES)))
            for kind in ("degree", "in_degree", "out_degree")
        },
        "hubs": sorted(people, key=lambda e: (-e.degree, e.id))[:top],
    }
    return out


def stats_tables(kg: KnowledgeGraph, top: int = 10) -> list:
    from rich.table import Table

    s = kg_stats(kg, top)
    counts = Table(title=f"KG ({kg.config.get('topology', '?')}, seed {kg.seed})")
    counts.add_column("quantity")
    counts.add_column("value", justify="right")
    for key in ("entities", "values", "relations", "triples", "dropped_nodes", "dropped_edges", "flipped_edges",
                "corpus_lines"):
        counts.add_row(key.replace("_", " "), str(s[key]))
    counts.add_row("degree gini", f"{s['degree_gini']:.3f}")

    quant = Table(title="Degree quantiles (entities)")
    quant.add_column("")
    for q in QUANTILES:
        quant.add_column({0.0: "min", 1.0: "max"}.get(q, f"p{round(q * 100)}"), justify="right")
    for kind, row in s["quantiles"].items():
        quant.add_row(kind.replace("_", " "), *(f"{row[q]:g}" for q in QUANTILES))

    hubs = Table(title=f"Top {len(s['hubs'])} hubs")
    for col in ("id", "name", "degree", "in", "out"):
        hubs.add_column(col, justify="left" if col == "name" else "right")
    for e in s["hubs"]:
        hubs.add_row(str(e.id), e.name, str(e.degree), str(e.in_degree), str(e.out_degree))
    return [counts, quant, hubs]


def degree_plot_png(kg: KnowledgeGraph) -> bytes:
    """PNG bytes of the degree histogram (count of entities per degree) on log-log axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = Counter(e.degree for e in kg.entities if e.kind == "entity" and e.degree > 0)
    ks = sorted(hist)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.loglog(ks, [hist[k] for k in ks], "o", markersize=4)
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("degree")
    ax.set_ylabel("entities")
    ax.set_title(f"{kg.config.get('topology', 'kg')}: {len(kg.entities)} entities, {len(kg.triples)} triples")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
