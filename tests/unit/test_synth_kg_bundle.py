"""KG bundle: round trip, GraphML, validation errors, atomic replacement."""

from __future__ import annotations

import json

import networkx as nx
import pytest

from kdel.errors import UserError
from synth_kg import FORMAT, KGConfig, KnowledgeGraph, generate


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    kg = generate(KGConfig(entities=60, attribute_relations=1, attribute_pool=4, seed=2))
    out = tmp_path_factory.mktemp("bundle") / "kg"
    kg.save(out)
    return kg, out


def _corrupt(bundle, tmp_path, edit):
    _, src = bundle
    dst = tmp_path / "bad"
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    obj = json.loads((dst / "kg.json").read_text())
    edit(obj)
    (dst / "kg.json").write_text(json.dumps(obj))
    return dst


def test_round_trip(bundle):
    kg, out = bundle
    back = KnowledgeGraph.load(out)
    assert back.entities == kg.entities and back.relations == kg.relations and back.triples == kg.triples
    assert back.content_hash() == kg.content_hash()
    assert back.corpus_lines() == (out / "corpus.txt").read_text().splitlines()
    obj = json.loads((out / "kg.json").read_text())
    assert obj["format"] == FORMAT
    assert {"id", "name", "degree", "in_degree", "out_degree", "kind"} <= set(obj["entities"][0])
    assert set(obj["triples"][0]) == {"id", "subject", "relation", "object"}


def test_graphml_matches_kg_json(bundle):
    kg, out = bundle
    g = nx.read_graphml(out / "graph.graphml", node_type=int, force_multigraph=True)
    assert g.is_directed() and g.is_multigraph()
    assert set(g.nodes) == {e.id for e in kg.entities}
    edges = sorted((u, v, d["relation"]) for u, v, d in g.edges(data=True))
    assert edges == sorted((t.subject, t.object, t.relation) for t in kg.triples)
    assert g.nodes[0]["name"] == kg.entity(0).name
    # identical to what networkx itself would have written
    g = nx.read_graphml(out / "graph.graphml", node_type=int, edge_key_type=int, force_multigraph=True)
    h = kg.to_networkx()
    assert dict(g.nodes(data=True)) == dict(h.nodes(data=True))
    assert sorted(g.edges(keys=True, data=True)) == sorted(h.edges(keys=True, data=True))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda o: o.update(format="kdel-kg/0"), "unsupported format"),
        (lambda o: o["triples"][3].update(subject=10_000), "unknown entity id 10000"),
        (lambda o: o["triples"][3].update(relation=-1), "unknown relation id"),
        (lambda o: o["triples"][4].update(subject=o["triples"][3]["subject"], relation=o["triples"][3]["relation"]),
         "duplicate \\(subject, relation\\)"),
        (lambda o: o["entities"][1].update(name=o["entities"][0]["name"]), "names must be unique"),
        (lambda o: o["entities"][0].update(degree=999), "degrees"),
        (lambda o: o.pop("triples"), "missing the key 'triples'"),
        (lambda o: o["entities"][2].update(id="2"), "'id' must be of type int"),
        (lambda o: o["relations"][0].update(templates=["{o} and {s}"]), "must end with"),
    ],
)
def test_invalid_bundles_are_rejected_in_one_line(bundle, tmp_path, edit, message):
    bad = _corrupt(bundle, tmp_path, edit)
    with pytest.raises(UserError, match=message) as info:
        KnowledgeGraph.load(bad)
    assert "\n" not in str(info.value) and "kg.json" in str(info.value)


def test_truncated_and_missing(bundle, tmp_path):
    _, src = bundle
    bad = tmp_path / "trunc"
    bad.mkdir()
    text = (src / "kg.json").read_text()
    (bad / "kg.json").write_text(text[: len(text) // 2])
    with pytest.raises(UserError, match="not valid JSON"):
        KnowledgeGraph.load(bad)
    with pytest.raises(UserError, match="does not exist"):
        KnowledgeGraph.load(tmp_path / "nowhere")
    with pytest.raises(UserError, match="kg.json is missing"):
        KnowledgeGraph.load(tmp_path)
    with pytest.raises(UserError, match="not a directory"):
        KnowledgeGraph.load(src / "kg.json")


def test_save_refuses_files_and_foreign_directories(bundle, tmp_path):
    kg, _ = bundle
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        kg.save(tmp_path / "file")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="refusing to overwrite"):
        kg.save(tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"


def test_failed_save_leaves_the_old_bundle_whole(bundle, tmp_path, monkeypatch):
    kg, _ = bundle
    out = tmp_path / "kg"
    kg.save(out)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    other = generate(KGConfig(entities=40, seed=9))

    import synth_kg.bundle as b

    def boom(_kg):
        raise RuntimeError("disk full")

    monkeypatch.setattr(b, "graphml_text", boom)
    with pytest.raises(RuntimeError):
        other.save(out)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kg"], "no staging directory left behind"
    monkeypatch.undo()
    other.save(out)
    assert KnowledgeGraph.load(out).content_hash() == other.content_hash()
