"""Training stage: memorization of the tiny KG, saved directory, determinism, KG hash check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdel.errors import UserError
from kdel.facts import FactTable
from kdel.models.loading import MODEL_META, check_kg_match, load_model
from kdel.models.scoring import score_targets
from kdel.train import PRESETS, TrainConfig, get_preset, train_model
from kdel.train.loop import REPORT_FILE, encode_corpus, lr_factor


def _all_training_pairs(table):
    prompts, targets = [], []
    for f in table.facts:
        for p in f.prompts:
            prompts.append(p)
            targets.append(f.target)
    return prompts, targets


def test_trained_model_reaches_target_and_reloads_with_hf(trained_model_dir, tiny_kg):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = json.loads((trained_model_dir / REPORT_FILE).read_text())
    assert report["reached_target"] is True
    assert report["recall"]["recall"] >= 0.99
    meta = json.loads((trained_model_dir / MODEL_META).read_text())
    assert meta == {"format": "kdel-model/1", "kg_hash": tiny_kg.content_hash(), "preset": "tiny", "tokenizer": "word",
                    "text_format": "natural"}

    model = AutoModelForCausalLM.from_pretrained(trained_model_dir, use_safetensors=True).eval()
    tok = AutoTokenizer.from_pretrained(trained_model_dir)
    table = FactTable.from_kg(tiny_kg)
    prompts, targets = _all_training_pairs(table)
    scores = score_targets(model, tok, prompts, targets)
    assert len(scores) == report["recall"]["n_pairs"]
    assert float(np.mean(scores.recalled)) == pytest.approx(report["recall"]["recall"], abs=1e-12)
    assert float(np.mean(scores.first_token_recalled)) == pytest.approx(report["recall"]["first_token_recall"])
    bins = report["recall"]["by_popularity_bin"]
    assert len(bins) == 5 and all(v >= 0.9 for v in bins.values())
    assert set(report["recall"]["by_relation"]) == {f.relation for f in table.facts}


def test_saved_tokenizer_reproduces_training_ids(trained_model_dir, tiny_kg):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained_model_dir)
    line = tiny_kg.corpus_lines()[0]
    ids = tok(line)["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    assert tok.convert_ids_to_tokens(ids[1:]) == line.split()


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.integration  # trains or renders: over the unit tier's budget
def test_same_seed_gives_identical_weights(tiny_kg, tmp_path):
    cfg = dict(preset="tiny", max_steps=6, warmup=2, eval_every=3)
    r1 = train_model(tiny_kg, tmp_path / "a", TrainConfig(seed=3, **cfg), progress=False)
    r2 = train_model(tiny_kg, tmp_path / "b", TrainConfig(seed=3, **cfg), progress=False)
    train_model(tiny_kg, tmp_path / "c", TrainConfig(seed=4, **cfg), progress=False)
    assert r1.steps == r2.steps == 6
    a, b, c = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(tmp_path / "c")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the seed matters, so the check above can fail
    assert [p["loss"] for p in r1.curve] == [p["loss"] for p in r2.curve]


def test_model_with_another_kg_hash_is_refused(trained_model_dir, tiny_kg):
    check_kg_match(trained_model_dir, tiny_kg.content_hash())  # the right KG passes
    load_model(trained_model_dir, kg_hash=tiny_kg.content_hash())
    with pytest.raises(UserError, match="trained on another KG"):
        load_model(trained_model_dir, kg_hash="f" * 64)


def test_object_mask_marks_exactly_the_object_tokens(tiny_kg):
    from kdel.models.tokenizer import build_word_tokenizer

    table = FactTable.from_kg(tiny_kg)
    lines = tiny_kg.corpus_lines()
    tok = build_word_tokenizer(lines, [e.name for e in tiny_kg.entities])
    ids, labels, obj, weights = encode_corpus(tok, lines, table, object_weight=3.0)
    objects = {f"{p} {f.target}": f.target for f in table.facts for p in f.prompts}
    checked = 0
    for i, line in enumerate(lines):
        target = objects.get(line.rstrip(" ."))
        if target is None:
            continue
        marked = tok.convert_ids_to_tokens(ids[i][obj[i]].tolist())
        assert marked == target.split()
        assert torch.all(weights[i][obj[i]] == 3.0) and torch.all(weights[i][~obj[i] & (labels[i] != -100)] == 1.0)
        checked += 1
    assert checked == len(lines)


def test_lr_schedule_warms_up_then_decays():
    f = [lr_factor(s, warmup=10, decay_steps=110, min_ratio=0.1) for s in range(200)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[9:], f[10:]))
    assert f[110] == pytest.approx(0.1) and f[199] == pytest.approx(0.1)


def test_presets_and_bad_config(tiny_kg, tmp_path):
    assert set(PRESETS) == {"tiny", "small", "base"}
    sizes = [PRESETS[p].n_embd * PRESETS[p].n_layer for p in ("tiny", "small", "base")]
    assert sizes == sorted(sizes)
    with pytest.raises(UserError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(UserError, match="target-recall"):
        train_model(tiny_kg, tmp_path / "m", TrainConfig(target_recall=1.5), progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        train_model(tiny_kg, tmp_path / "file", TrainConfig(max_steps=1), progress=False)


def test_quick_recall_equals_score_encoded_on_a_partly_trained_model(trained_model_dir, tiny_kg):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kdel.models.scoring import score_encoded
    from kdel.train.report import RecallProbe, quick_recall

    model = AutoModelForCausalLM.from_pretrained(trained_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(trained_model_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    probe = RecallProbe.training(tok, FactTable.from_kg(tiny_kg))
    slow = float(np.mean(score_encoded(model, probe.encoded, tok.pad_token_id).recalled))
    assert 0.05 < slow < 0.95  # partial recall, so agreement is informative
    assert quick_recall(model, probe, tok.pad_token_id, chunk=50) == pytest.approx(slow, abs=1e-12)


def test_whole_entities_gives_one_token_per_entity(tiny_kg, tmp_path):
    from transformers import AutoTokenizer

    report = train_model(tiny_kg, tmp_path / "m", TrainConfig(whole_entities=True, max_steps=2), progress=False)
    meta = json.loads((tmp_path / "m" / MODEL_META).read_text())
    assert meta["tokenizer"] == "entity"
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    for e in tiny_kg.entities:
        assert len(tok(" " + e.name, add_special_tokens=False)["input_ids"]) == 1
    assert report.steps == 2 and report.recall["n_pairs"] == sum(len(f.prompts) for f in FactTable.from_kg(tiny_kg).facts)
