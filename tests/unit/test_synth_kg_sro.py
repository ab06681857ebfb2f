"""The symbolic corpus format `sro` (DESIGN §13): one token per entity and per relation, a fact is `s r o`."""

from __future__ import annotations

import json

import pytest

from kdel.errors import UserError
from kdel.facts import FactTable
from kdel.models.positions import site_position
from kdel.models.tokenizer import build_word_tokenizer
from synth_kg import KGConfig, KnowledgeGraph, generate

CFG = dict(entities=30, relations=12, seed=0, attribute_relations=1, attribute_pool=4)


@pytest.fixture(scope="module")
def pair():
    return generate(KGConfig(**CFG)), generate(KGConfig(**CFG, text_format="sro"))


def test_same_graph_as_the_natural_format_with_one_token_names(pair):
    nat, sro = pair
    assert sro.text_format == "sro" and nat.text_format == "natural"
    assert [(t.subject, t.relation, t.object) for t in sro.triples] == [(t.subject, t.relation, t.object)
                                                                       for t in nat.triples]
    assert [e.name for e in sro.entities] == [e.name.replace(" ", "_") for e in nat.entities]
    assert all(len(e.name.split()) == 1 for e in sro.entities)
    for r_nat, r_sro in zip(nat.relations, sro.relations):
        assert r_sro.name == r_nat.name and r_sro.templates == ("{s} " + r_nat.name + " {o}",)
        assert r_sro.heldout_templates == () and " " not in r_sro.name


def test_corpus_prompts_and_recorded_config(pair):
    nat, sro = pair
    t = sro.triples[5]
    s, o, r = sro.entities[t.subject].name, sro.entities[t.object].name, sro.relations[t.relation].name
    assert sro.sentences(5) == [f"{s} {r} {o}"] and sro.prompts(5) == [f"{s} {r}"]
    assert sro.paraphrase_prompts(5) == []
    lines = sro.corpus_lines()
    assert len(lines) == len(sro.triples) and all(len(line.split()) == 3 for line in lines)
    assert sro.config["text_format"] == "sro" and (sro.config["templates_per_relation"], sro.config["heldout_per_relation"]) == (1, 0)
    assert "text_format" not in nat.config, "natural bundles keep their bytes: no new key"
    assert generate(KGConfig(**sro.config)).content_hash() == sro.content_hash()


def test_bundle_round_trip_and_validation(pair, tmp_path):
    _, sro = pair
    sro.save(tmp_path / "kg")
    back = KnowledgeGraph.load(tmp_path / "kg")
    assert back.text_format == "sro" and back.content_hash() == sro.content_hash()
    obj = json.loads((tmp_path / "kg" / "kg.json").read_text())
    bad = json.loads(json.dumps(obj))
    bad["entities"][0]["name"] = "Two Words"
    with pytest.raises(UserError, match="one token"):
        KnowledgeGraph.from_dict(bad)
    bad = json.loads(json.dumps(obj))
    bad["relations"][0]["heldout_templates"] = ["{s} of {o}"]
    with pytest.raises(UserError, match="exactly one template"):
        KnowledgeGraph.from_dict(bad)
    bad = json.loads(json.dumps(obj))
    bad["relations"][0]["templates"] = ["{s} is the mentor of {o}"]
    with pytest.raises(UserError, match="TOKEN"):
        KnowledgeGraph.from_dict(bad)
    bad = json.loads(json.dumps(obj))
    bad["config"]["text_format"] = "prose"
    with pytest.raises(UserError, match="unknown text format"):
        KnowledgeGraph.from_dict(bad)


def test_every_entity_and_relation_is_one_token_and_sites_resolve(pair):
    _, sro = pair
    tok = build_word_tokenizer(sro.corpus_lines(), [e.name for e in sro.entities])
    for name in [e.name for e in sro.entities] + [r.name for r in sro.relations]:
        assert len(tok(name, add_special_tokens=False)["input_ids"]) == 1, name
    table = FactTable.from_kg(sro)
    for f in table.facts[:10]:
        ids = tok(f.prompt)["input_ids"]
        assert len(ids) == 3 and ids[0] == tok.bos_token_id  # <bos> s r
        assert site_position(tok, f.prompt, f.subject, "subject_last") == 1  # the subject token
        assert site_position(tok, f.prompt, f.subject, "last") == 2  # the relation token
        assert tok.convert_ids_to_tokens(ids[1:]) == f.prompt.split()


def test_paraphrase_group_is_empty_everywhere(pair):
    _, sro = pair
    table = FactTable.from_kg(sro)
    assert all(not f.paraphrases for f in table.facts)
    for tid in range(0, len(sro.triples), 7):
        assert sro.probe_groups(tid)["paraphrase"] == [] and table.probe_groups(tid)["paraphrase"] == []
        assert sro.probe_groups(tid, 50, 0) == table.probe_groups(tid, sro.unrelated_pool(50, 0))


def test_unknown_format_is_a_user_error():
    with pytest.raises(UserError, match="unknown format"):
        generate(KGConfig(entities=10, text_format="prose"))
