"""The `sro` corpus format end to end through the CLI (DESIGN §13): generate -> train -> trace -> delete -> audit.

A 30-entity sro KG, the `tiny` model trained to recall >= 0.99, one fact traced (subject_last = the subject
token, last = the relation token), the fact ROME-erased at `last` and checked on the saved edited model,
and a one-case audit that reports the empty paraphrase group instead of failing on it.
"""

from __future__ import annotations

import json

import pytest

from kdel.cli.main import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sro_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sro")
    kg, model = root / "kg", root / "model"
    assert main(["kg", "generate", "--out", str(kg), "--format", "sro", "--entities", "30", "--relations", "12"]) == 0
    assert main(["train", "--kg", str(kg), "--out", str(model), "--quiet"]) == 0
    return root, kg, model


def test_training_records_the_format_and_reaches_recall(sro_run):
    _, _, model = sro_run
    meta = json.loads((model / "kdel_model.json").read_text())
    assert meta["text_format"] == "sro"
    report = json.loads((model / "train_report.json").read_text())
    assert report["reached_target"] and report["recall"]["recall"] >= 0.99
    assert report["recall"]["n_paraphrase_pairs"] == 0 and report["recall"]["paraphrase_recall"] is None
    assert "no held-out paraphrase" in report["recall"]["paraphrase_note"]


def test_trace_delete_and_audit(sro_run, tmp_path, capsys, monkeypatch):
    from kdel.facts import FactTable
    from kdel.models.loading import load_model
    from kdel.models.scoring import score_targets
    from synth_kg import KnowledgeGraph

    monkeypatch.setenv("KDEL_CACHE_DIR", str(tmp_path / "cache"))
    _, kg_dir, model = sro_run
    kg = KnowledgeGraph.load(kg_dir)
    fact_id = next(t.id for t in kg.triples if kg.entities[t.subject].degree >= 4)
    trace_dir = tmp_path / "trace"
    assert main(["trace", "--model", str(model), "--kg", str(kg_dir), "--out", str(trace_dir), "--fact", str(fact_id),
                 "--component", "mlp", "--metric", "prob"]) == 0
    row = json.loads((trace_dir / "traces.jsonl").read_text().splitlines()[0])
    subject, relation = kg.entities[kg.triples[fact_id].subject].name, kg.relations[kg.triples[fact_id].relation].name
    assert row["prompt"] == f"{subject} {relation}"
    assert row["subject_positions"] == [1] and row["last_subject"] == 1 and row["last"] == 2  # <bos> s r
    assert row["tokens"][1:] == [subject, relation]

    edited = tmp_path / "edited"
    layer = row["peak_layer"]["last"]
    capsys.readouterr()
    assert main(["delete", "--model", str(model), "--kg", str(kg_dir), "--fact", str(fact_id), "--method", "rome",
                 "--objective", "erase", "--site", "last", "--layer", str(layer), "--out", str(edited)]) == 0, \
        capsys.readouterr().err
    record = json.loads((edited / "edit.json").read_text())
    assert record["efficacy"] == 1.0
    fact = FactTable.from_kg(kg).fact(fact_id)
    before_model, tok = load_model(model)
    after_model, _ = load_model(edited)
    before = score_targets(before_model, tok, [fact.prompt], [fact.target])
    after = score_targets(after_model, tok, [fact.prompt], [fact.target])
    assert before.recalled[0] and not after.recalled[0], "the fact must be erased on the saved edited model"
    assert after.prob[0] < before.prob[0]

    audit = tmp_path / "audit"
    assert main(["audit", "--model", str(model), "--kg", str(kg_dir), "--out", str(audit), "--methods", "rome",
                 "--sites", "last", "--layers", str(layer), "--per-bin", "1", "--bins", "1", "--unrelated", "20",
                 "--no-tracing-effect", "--quiet"]) == 0, capsys.readouterr().err
    cases = [json.loads(p.read_text()) for p in (audit / "cases").glob("*.json")]
    assert len(cases) == 1 and cases[0]["status"] == "ok"
    assert cases[0]["groups"]["paraphrase"]["n"] == 0
    assert cases[0]["efficacy"]["paraphrase_recall_after"] is None
