"""`kdel forget` on the hub of the test KG (acceptance of issue 16): every fact of the hub goes on every training
template while unrelated recall stays >= 0.9 (ROME, one fact after another); the edited model on disk is the
edited one; inputs are never overwritten. And the extraction check finds a planted way to get an object out."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from kdel.cli.main import main
from kdel.facts import FactTable
from kdel.models.loading import load_model_for_table
from kdel.models.scoring import score_targets


def _tree_hash(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def hub(tiny_kg):
    return max(tiny_kg.entities, key=lambda e: (e.out_degree, -e.id))


@pytest.fixture(scope="module")
def forgotten(tiny_kg_dir, trained_model_dir, hub, tmp_path_factory):
    out = tmp_path_factory.mktemp("forget") / "edited"
    before = _tree_hash(trained_model_dir)
    code = main(["forget", "--model", str(trained_model_dir), "--kg", str(tiny_kg_dir), "--entity", str(hub.id),
                 "--method", "rome", "--out", str(out), "--cache-dir", str(out.parent / "cache")])
    assert code == 0
    assert _tree_hash(trained_model_dir) == before  # the source model is untouched
    return out, json.loads((out / "forget.json").read_text())


@pytest.mark.slow
def test_forget_removes_every_fact_of_the_hub(forgotten, hub, tiny_kg):
    out, rec = forgotten
    assert rec["format"] == "kdel-forget/1" and rec["mode"] == "sequential"
    assert rec["entity"]["id"] == hub.id and rec["entity"]["degree"] == hub.degree
    ids = sorted(t.id for t in tiny_kg.triples if t.subject == hub.id)
    assert rec["fact_ids"] == ids and len(rec["steps"]) == len(ids)
    for f in rec["facts"]:
        assert any(f["training_recall_before"])
        assert not any(f["training_recall_after"]), f  # whole-object recall 0 on every training template
    assert rec["efficacy"]["all_removed"] and rec["efficacy"]["training_recall_after"] == 0.0
    groups = rec["side_effects"]["groups"]
    assert groups["entity"]["acc_after"] == 0.0
    assert groups["unrelated"]["n_recalled_before"] >= 1 and groups["unrelated"]["acc_after_recalled"] >= 0.9
    assert rec["side_effects"]["global"]["retained_acc"] >= 0.9 and not rec["side_effects"]["wrecked"]
    assert all(s["total_delta_norm"] > 0 for s in rec["steps"])
    assert rec["delta_norm_total"] > 0 and rec["extraction"]["n_facts"] == len(ids)


@pytest.mark.slow
def test_the_saved_model_is_the_edited_one(forgotten, tiny_kg):
    out, rec = forgotten
    table = FactTable.from_kg(tiny_kg)
    model, tok = load_model_for_table(out, table)
    facts = [table.fact(i) for i in rec["fact_ids"]]
    prompts = [p for f in facts for p in f.prompts]
    targets = [f.target for f in facts for _ in f.prompts]
    assert not score_targets(model, tok, prompts, targets).recalled.any()


def test_forget_output_rule(trained_model_dir, tiny_kg_dir, hub, tmp_path):
    args = ["forget", "--kg", str(tiny_kg_dir), "--entity", str(hub.id), "--method", "rome"]
    assert main(args + ["--model", str(trained_model_dir), "--out", str(trained_model_dir)]) == 2
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(args + ["--model", str(trained_model_dir), "--out", str(foreign)]) == 2
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert main(args + ["--model", str(trained_model_dir), "--out", str(trained_model_dir / "again")]) == 2
    assert main(args + ["--model", str(trained_model_dir), "--out", str(tiny_kg_dir.parent)]) == 2  # holds the KG
    assert main(["forget", "--model", str(trained_model_dir), "--kg", str(tiny_kg_dir), "--subject", "Nobody Atall",
                 "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_extraction_check_finds_a_planted_paraphrase(forgotten, tiny_kg):
    """Plant a held-out template that the edited model still completes with a forgotten object (the prompt of
    another, still-recalled fact with the same object): the check must flag the object as extractable by a
    held-out template, and by no training template."""
    from kdel.forget.extraction import extraction_check
    from kdel.models.generation import extend, greedy
    from kdel.models.scoring import encode_prompt

    import torch

    out, rec = forgotten
    table = FactTable.from_kg(tiny_kg)
    model, tok = load_model_for_table(out, table)
    deleted = rec["fact_ids"]
    clean = extraction_check(model, tok, table, deleted)
    assert clean["n_extractable"] == 0
    still = score_targets(model, tok, [f.prompt for f in table.facts], [f.target for f in table.facts]).recalled
    plant = None
    for fid in deleted:
        f = table.fact(fid)
        donor = next((g for g in table.facts if g.target == f.target and g.id not in deleted and still[g.id]), None)
        if donor is not None:
            plant = (f, donor)
            break
    assert plant is not None, "the test KG should have a forgotten object that another fact still produces"
    f, donor = plant
    planted = dataclasses.replace(f, paraphrases=f.paraphrases + (donor.prompt,))
    facts = [planted if g.id == f.id else g for g in table.facts]
    ptable = dataclasses.replace(table, facts=facts)
    report = extraction_check(model, tok, ptable, deleted)
    assert report["extractable_fact_ids"] == [f.id] and report["objects_extractable"] == [f.target]
    entry = next(e for e in report["facts"] if e["fact_id"] == f.id)
    assert entry["extractable_by"] == ["heldout"]
    tpl = next(t for t in entry["templates"] if t["prompt"] == donor.prompt)
    assert tpl["produces_object"] and tpl["first_token_rank"] == 0 and tpl["candidate_rank"] == 0
    # the completion is the model's own greedy continuation
    ids = torch.tensor([encode_prompt(tok, donor.prompt)])
    direct = tok.decode([int(t) for t in extend(model, ids, len(tpl["completion"].split()) + 3, greedy)[0]])
    assert " ".join(direct.split()).startswith(f.target)
    assert all(not t["contains_object"] for t in entry["templates"] if t["kind"] == "training")
