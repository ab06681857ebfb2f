"""`kdel kg generate | stats | export-facts` through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kdel.cli.main import main
from synth_kg import KnowledgeGraph

# typer >= 0.2x vendors click (typer._click); kdel/cli/main.py catches only `click` exceptions, so a usage
# error from the parser exits 1 instead of 2. Remove this mark once main.py catches typer._click's too.


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("kdel: error:")
    return err


def test_generate_stats_and_plot(tmp_path, capsys):
    out = tmp_path / "kg"
    assert main(["kg", "generate", "--out", str(out), "--entities", "80", "--seed", "1"]) == 0
    kg = KnowledgeGraph.load(out)
    assert len(kg.entities) == 80 and kg.seed == 1
    capsys.readouterr()
    png = tmp_path / "deg.png"
    assert main(["kg", "stats", str(out), "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    for word in ("triples", "p50", "hubs", kg.entities[max(range(80), key=lambda i: kg.entities[i].degree)].name):
        assert word in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("topology, extra", [("er", ["--edges", "150"]), ("powerlaw", ["--exponent", "2.2"])])
def test_generate_other_topologies(tmp_path, topology, extra):
    out = tmp_path / topology
    assert main(["kg", "generate", "--out", str(out), "--topology", topology, "--entities", "60", *extra]) == 0
    kg = KnowledgeGraph.load(out)
    assert kg.config["topology"] == topology


def test_same_seed_same_bytes_via_cli(tmp_path):
    for name in ("a", "b"):
        assert main(["kg", "generate", "--out", str(tmp_path / name), "--entities", "50", "--relations", "auto"]) == 0
    for f in ("kg.json", "corpus.txt", "graph.graphml"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_regenerate_replaces_an_existing_bundle_whole(tmp_path):
    out = tmp_path / "kg"
    assert main(["kg", "generate", "--out", str(out), "--entities", "50", "--seed", "1"]) == 0
    assert main(["kg", "generate", "--out", str(out), "--entities", "70", "--seed", "2"]) == 0
    assert len(KnowledgeGraph.load(out).entities) == 70
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kg"]


def _bundle(tmp_path):
    out = tmp_path / "kg"
    assert main(["kg", "generate", "--out", str(out), "--entities", "40"]) == 0
    return out


def _edit(path, fn):
    obj = json.loads((path / "kg.json").read_text())
    fn(obj)
    (path / "kg.json").write_text(json.dumps(obj))


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda p: (p / "kg.json").write_text((p / "kg.json").read_text()[:500]), "not valid JSON"),
        (lambda p: _edit(p, lambda o: o["triples"][0].update(object=4000)), "unknown entity id 4000"),
        (lambda p: _edit(p, lambda o: o["triples"][1].update(subject=o["triples"][0]["subject"],
                                                             relation=o["triples"][0]["relation"])), "duplicate"),
        (lambda p: _edit(p, lambda o: o.update(format="kdel-kg/9")), "unsupported format"),
    ],
)
def test_stats_on_bad_bundles_exits_2(tmp_path, capsys, corrupt, message):
    out = _bundle(tmp_path)
    corrupt(out)
    capsys.readouterr()
    assert main(["kg", "stats", str(out)]) == 2
    assert message in _one_line_error(capsys)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--entities", "1"], "--entities"),
        (["--seed", "-3"], "--seed"),
        (["--relations", "many"], "--relations"),
        (["--relations", "0"], "--relations"),
        (["--topology", "ws"], "unknown topology"),
        (["--ba-m", "0"], "--ba-m"),
        (["--topology", "er", "--entities", "10", "--edges", "100"], "--edges"),
        (["--topology", "powerlaw", "--exponent", "0.5"], "--exponent"),
        (["--templates", "2"], "--templates"),
        (["--exposure", "zipf"], "exposure"),
        pytest.param(["--entities", "ten"], "integer"),
        pytest.param(["--bogus"], "--bogus"),
    ],
)
def test_generate_bad_input_exits_2(tmp_path, capsys, args, message):
    assert main(["kg", "generate", "--out", str(tmp_path / "kg"), *args]) == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "kg").exists()


def test_missing_directory_and_output_file(tmp_path, capsys):
    assert main(["kg", "stats", str(tmp_path / "missing")]) == 2
    assert "does not exist" in _one_line_error(capsys)
    target = tmp_path / "taken"
    target.write_text("a file")
    assert main(["kg", "generate", "--out", str(target)]) == 2
    assert "not a directory" in _one_line_error(capsys)
    assert target.read_text() == "a file"


def test_export_facts(tmp_path):
    out = _bundle(tmp_path)
    facts = tmp_path / "facts.jsonl"
    assert main(["kg", "export-facts", str(out), str(facts)]) == 0
    kg = KnowledgeGraph.load(out)
    lines = [json.loads(x) for x in facts.read_text().splitlines()]
    assert len(lines) == len(kg.triples)
    assert lines[0]["subject"] == kg.subject_name(0) and lines[0]["target"].strip() == kg.object_name(0)


def test_subprocess_exit_code_and_help(tmp_path):
    r = subprocess.run([sys.executable, "-m", "kdel.cli.main", "kg", "generate", "--out", str(tmp_path / "k"),
                        "--seed", "-1"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "kdel.cli.main", "kg", "generate", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--exponent" in r.stdout
