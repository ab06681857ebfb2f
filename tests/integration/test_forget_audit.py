"""The entity audit (`kdel audit --forget-entities K --bins B`): cases per sampled entity, fingerprinted resume,
summary against degree with cluster CIs and corrected p; and the audit flags' misuse."""

from __future__ import annotations

import json

import pytest

from kdel.audit.entity import EntityAuditConfig, run_entity_audit
from kdel.cli.main import main
from kdel.facts import FactTable


def test_mode_flags_misuse_exits_2(trained_model_dir, tiny_kg_dir, tmp_path):
    base = ["audit", "--model", str(trained_model_dir), "--kg", str(tiny_kg_dir), "--out", str(tmp_path / "a")]
    assert main(base + ["--sequential", "3", "--forget-entities", "2"]) == 2
    assert main(base + ["--as-object"]) == 2  # goes with --forget-entities
    assert main(base + ["--sequential", "3", "--as-object"]) == 2
    assert main(base + ["--sequential", "3", "--order", "sideways"]) == 2
    assert main(base + ["--sequential", "3", "--layers", "all"]) == 2
    assert main(base + ["--sequential", "3", "--workers", "2"]) == 2
    assert main(base + ["--forget-entities", "0"]) == 2
    assert main(base + ["--sequential", "3", "--objective", "replace"]) == 2
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_entity_audit_resumes_and_summarises(trained_model_dir, tiny_kg, tiny_kg_dir, tmp_path):
    table = FactTable.from_kg(tiny_kg)
    cfg = EntityAuditConfig(n_entities=3, n_bins=3, methods=("rome",), unrelated_size=20)
    out = tmp_path / "audit"
    s1 = run_entity_audit(trained_model_dir, table, out, cfg, progress=False, kg_dir=tiny_kg_dir)
    cases = sorted((out / "entities" / "cases").glob("*.json"))
    assert len(cases) == 3 and s1["n_ok"] == 3 and s1["timing"]["cases_run"] == 3
    recs = [json.loads(p.read_text()) for p in cases]
    assert sorted(r["spec"]["bin"] for r in recs) == [0, 1, 2]
    for r in recs:
        assert r["revert_verified"] and r["fingerprint"]["hash"]
        ids = sorted(t.id for t in tiny_kg.triples if tiny_kg.entity(t.subject).name == r["spec"]["entity"])
        assert r["spec"]["fact_ids"] == ids
        assert r["efficacy"]["n_facts"] == len(ids)
    cond = s1["conditions"][0]
    assert cond["n_entities"] == 3
    corr = cond["spearman_vs_degree"]["neighbors_1hop.mean_p_drop"]
    assert {"estimate", "lo", "hi", "p", "p_holm", "p_bh", "n_subjects"} <= set(corr)
    assert corr["n_subjects"] == 3  # one cluster per entity
    stamps = {p.name: p.stat().st_mtime_ns for p in cases}
    s2 = run_entity_audit(trained_model_dir, table, out, cfg, progress=False, kg_dir=tiny_kg_dir)
    assert s2["timing"]["cases_run"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "entities" / "cases").glob("*.json")} == stamps
    assert s2["conditions"] == s1["conditions"]
    # other settings: recomputed with a warning, the old files kept
    cfg2 = EntityAuditConfig(n_entities=3, n_bins=3, methods=("rome",), unrelated_size=21)
    with pytest.warns(UserWarning, match="other settings"):
        s3 = run_entity_audit(trained_model_dir, table, out, cfg2, progress=False, kg_dir=tiny_kg_dir)
    assert s3["timing"]["cases_run"] == 3
    assert len(list((out / "entities" / "superseded").glob("*.json"))) == 3
