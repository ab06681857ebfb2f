"""The KG stages: generate a synthetic KG bundle, export a bundle's facts as a facts file.

Both follow kdel's one output rule (kdel.outputs): a bundle goes into a missing or empty directory or
replaces a bundle (in one rename); a facts file never replaces an existing file unless `force`, and never
an input.
"""

from __future__ import annotations

from pathlib import Path

from kdel.outputs import check_out_dir, check_out_file


def generate_kg(out, config) -> object:
    """Generate a KG from a `synth_kg.KGConfig` and write its bundle to `out`; returns the KnowledgeGraph.

    Writes OUT/kg.json, OUT/corpus.txt, OUT/graph.graphml."""
    from synth_kg import generate

    out = check_out_dir(out, "kg")
    config.validate()
    kg = generate(config)
    kg.save(Path(out))
    return kg


def export_facts(kg_dir, out, force: bool = False) -> int:
    """Write the facts of the bundle in `kg_dir` as a facts file `out` (line number = triple id); returns the
    number of facts. An existing `out` is replaced only with `force`; `out` inside the bundle never is."""
    from synth_kg import KnowledgeGraph

    from kdel.facts import export_kg_facts

    check_out_file(out, inputs=[kg_dir], force=force, what="facts file")
    kg = KnowledgeGraph.load(kg_dir)
    return export_kg_facts(kg, out)
