"""The KG bundle on disk (DESIGN §2, §12): kg.json (`kdel-kg/1`), corpus.txt, graph.graphml, and
kg_provenance.json (`kdel-kg-provenance/1`: synth_kg's version, git commit and dirty flag, library versions).

kg.json, corpus.txt and graph.graphml depend only on the config, the seed and the library versions (same
seed, same bytes; kg.json is what the KG's content hash covers). The provenance record is kept apart so that
a new commit or a dirty checkout never changes those bytes or the hash; reading a bundle ignores it.

Saving writes all three files into a staging directory and swaps it in (`staged_dir`), so an
existing bundle is replaced whole or not at all. Reading turns kg.json into the constructor arguments of a
`KnowledgeGraph` (schema checked here, meaning checked by the graph itself); any problem is a `UserError`
with one line naming the file and the problem.

This module does not import `synth_kg.graph` (the graph imports it): it reads a graph's attributes to
write one, and hands plain parts back when reading.
"""

from __future__ import annotations

import json
from pathlib import Path

from synth_kg.atomic import atomic_write_text, dumps_json, sha256_text, staged_dir
from synth_kg.errors import UserError
from synth_kg.provenance import PROVENANCE_FILE, bundle_provenance
from synth_kg.relations import Relation
from synth_kg.types import FORMAT, Entity, Triple

KG_FILE, CORPUS_FILE, GRAPH_FILE = "kg.json", "corpus.txt", "graph.graphml"  # + PROVENANCE_FILE


def to_dict(kg) -> dict:
    """The kg.json object of a `KnowledgeGraph`."""
    return {
        "format": FORMAT,
        "config": kg.config,
        "seed": kg.seed,
        "entities": [
            {"id": e.id, "name": e.name, "degree": e.degree, "in_degree": e.in_degree, "out_degree": e.out_degree,
             "kind": e.kind, "exposure": kg.exposure(e.id)}
            for e in kg.entities
        ],
        "relations": [
            {"id": r.id, "name": r.name, "templates": list(r.templates), "heldout_templates": list(r.heldout_templates),
             "kind": r.kind}
            for r in kg.relations
        ],
        "triples": [{"id": t.id, "subject": t.subject, "relation": t.relation, "object": t.object} for t in kg.triples],
        "dropped": kg.dropped,
        "versions": kg.versions,
        "generation": kg.generation,
    }


_NODE_KEYS = (("n0", "name", "string"), ("n1", "kind", "string"), ("n2", "degree", "int"),
              ("n3", "in_degree", "int"), ("n4", "out_degree", "int"))
_EDGE_KEYS = (("e0", "relation", "int"), ("e1", "triple", "int"), ("e2", "relation_name", "string"))


def graphml_text(kg) -> str:
    """GraphML of `kg.to_networkx()` (a directed multigraph; edge id = triple id), written directly.

    Same content as networkx's writer (and read back by `networkx.read_graphml`), ~10x faster at 150k edges.
    """
    from xml.sax.saxutils import escape

    lines = [
        "<?xml version='1.0' encoding='utf-8'?>",
        '<graphml xmlns="http://graphml.graphdrawing.org/xmlns" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns '
        'http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">',
    ]
    lines += [f'  <key id="{k}" for="node" attr.name="{n}" attr.type="{t}" />' for k, n, t in _NODE_KEYS]
    lines += [f'  <key id="{k}" for="edge" attr.name="{n}" attr.type="{t}" />' for k, n, t in _EDGE_KEYS]
    lines.append('  <graph edgedefault="directed">')
    for e in kg.entities:
        lines.append(f'    <node id="{e.id}"><data key="n0">{escape(e.name)}</data><data key="n1">{e.kind}</data>'
                     f'<data key="n2">{e.degree}</data><data key="n3">{e.in_degree}</data>'
                     f'<data key="n4">{e.out_degree}</data></node>')
    names = [escape(r.name) for r in kg.relations]
    for t in kg.triples:
        lines.append(f'    <edge source="{t.subject}" target="{t.object}" id="{t.id}"><data key="e0">{t.relation}</data>'
                     f'<data key="e1">{t.id}</data><data key="e2">{names[t.relation]}</data></edge>')
    lines += ["  </graph>", "</graphml>", ""]
    return "\n".join(lines)


def save(kg, directory: str | Path) -> Path:
    """Write the bundle to `directory` atomically (a whole new bundle or the old one, never a mix)."""
    final = Path(directory)
    if final.exists() and not final.is_dir():
        raise UserError(f"output path {final} exists and is not a directory")
    if final.is_dir() and any(final.iterdir()) and not (final / KG_FILE).is_file():
        raise UserError(f"refusing to overwrite {final}: it is a non-empty directory without {KG_FILE}")
    try:
        with staged_dir(final) as staging:
            kg_text = dumps_json(to_dict(kg))
            atomic_write_text(staging / KG_FILE, kg_text)
            atomic_write_text(staging / CORPUS_FILE, "".join(line + "\n" for line in kg.corpus_lines()))
            atomic_write_text(staging / GRAPH_FILE, graphml_text(kg))
            atomic_write_text(staging / PROVENANCE_FILE, dumps_json(bundle_provenance(sha256_text(kg_text), kg.seed)))
    except PermissionError as e:
        raise UserError(f"cannot write the bundle {final}: {e.strerror or e}") from None
    return final


# ------------------------------------------------------------------------------------------- loading
def read_provenance(directory: str | Path) -> dict | None:
    """The kg_provenance.json record of a bundle, or None when it has none (a bundle written before the
    record existed) or it cannot be read: provenance is reported, never required."""
    try:
        obj = json.loads((Path(directory) / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _need(obj: dict, key: str, types, where: str):
    if not isinstance(obj, dict):
        raise UserError(f"{where} must be a JSON object")
    if key not in obj:
        raise UserError(f"{where} is missing the key {key!r}")
    value = obj[key]
    if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):
        names = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
        raise UserError(f"{where}: {key!r} must be of type {names}, got {type(value).__name__}")
    return value


def parts_from_dict(obj: dict) -> dict:
    """The keyword arguments of `KnowledgeGraph(...)` stored in a kg.json object (schema checked)."""
    if not isinstance(obj, dict):
        raise UserError("the top level must be a JSON object")
    fmt = obj.get("format")
    if fmt != FORMAT:
        raise UserError(f"unsupported format {fmt!r} (expected {FORMAT!r})")
    entities = [
        Entity(_need(e, "id", int, f"entity #{i}"), _need(e, "name", str, f"entity #{i}"),
               _need(e, "degree", int, f"entity #{i}"), _need(e, "in_degree", int, f"entity #{i}"),
               _need(e, "out_degree", int, f"entity #{i}"), e.get("kind", "entity"))
        for i, e in enumerate(_need(obj, "entities", list, "kg.json"))
    ]
    relations = []
    for i, r in enumerate(_need(obj, "relations", list, "kg.json")):
        where = f"relation #{i}"
        templates = _need(r, "templates", list, where)
        heldout = _need(r, "heldout_templates", list, where)
        relations.append(Relation(_need(r, "id", int, where), _need(r, "name", str, where), tuple(templates),
                                  tuple(heldout), r.get("kind", "graph")))
    triples = [
        Triple(_need(t, "id", int, f"triple #{i}"), _need(t, "subject", int, f"triple #{i}"),
               _need(t, "relation", int, f"triple #{i}"), _need(t, "object", int, f"triple #{i}"))
        for i, t in enumerate(_need(obj, "triples", list, "kg.json"))
    ]
    return dict(entities=entities, relations=relations, triples=triples,
                config=_need(obj, "config", dict, "kg.json"), seed=_need(obj, "seed", int, "kg.json"),
                dropped=obj.get("dropped", []), versions=obj.get("versions", {}),
                generation=obj.get("generation", {}))


def read_kg_json(directory: str | Path) -> tuple[Path, object]:
    """(path of kg.json, its parsed JSON) of a bundle directory; a missing or unreadable file is a UserError."""
    d = Path(directory)
    if not d.exists():
        raise UserError(f"KG directory {d} does not exist")
    if not d.is_dir():
        raise UserError(f"KG path {d} is not a directory (expected a bundle with {KG_FILE})")
    path = d / KG_FILE
    if not path.is_file():
        raise UserError(f"{d} is not a KG bundle: {KG_FILE} is missing")
    try:
        return path, json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON (truncated or corrupt?): {e.msg} at line {e.lineno}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
