"""Corpora for key statistics: `self:N` sampling (seeded, deterministic), files, the held-out split, and the
provenance that reaches KeyStats.info()."""

from __future__ import annotations

import pytest
import torch

from kdel.delete.corpus import Corpus, attach_corpus, corpus_of, resolve_corpus, sample_self_corpus
from kdel.delete.covariance import ThinCorpusWarning, clear_memory_cache, key_statistics
from kdel.errors import UserError
from kdel.models.adapter import ModelAdapter
from kdel.models.generation import extend, greedy
from tests.conftest import SENTENCES
from tests.unit.test_rome_helpers import sentence_table


def _n_tokens(tok, lines):
    return sum(len(tok(line, add_special_tokens=False)["input_ids"]) for line in lines)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_self_corpus_is_deterministic_for_a_seed(random_model, family):
    model, tok = random_model(family)
    a = resolve_corpus("self:300", model, tok, seed=3)
    b = resolve_corpus("self:300", model, tok, seed=3)
    c = resolve_corpus("self:300", model, tok, seed=4)
    assert a.lines == b.lines and a.hash == b.hash
    assert a.lines != c.lines
    assert a.source == "self" and a.spec == "self:300" and a.seed == 3
    # a word-level vocabulary round-trips, and special tokens other than EOS are never sampled: exactly N tokens
    assert _n_tokens(tok, a.lines) == 300
    assert not any(s in line for line in a.lines for s in ("<pad>", "<unk>", "<bos>"))
    assert len(set(a.lines)) > len(a.lines) // 2  # sampled, not greedy: the lines differ


def test_self_corpus_stops_at_eos_and_respects_the_context(random_model):
    model, tok = random_model("gpt2")  # context of 64 positions
    eos = tok.eos_token_id
    with torch.no_grad():  # make EOS likely: sequences end early, and EOS never enters the text
        model.lm_head.weight[eos] += 0.5 * model.lm_head.weight.norm(dim=1).mean()
    lines = sample_self_corpus(model, tok, 200, seed=0, length=500)
    assert _n_tokens(tok, lines) <= 200 and lines
    assert max(len(tok(line)["input_ids"]) for line in lines) <= 64


def test_cached_generation_equals_full_recomputation(random_model):
    model, tok = random_model("llama")
    ids = torch.tensor([tok("Maria Lopez works with")["input_ids"]] * 2)
    new = extend(model, ids, 6, greedy)
    seq = ids
    with torch.no_grad():
        for _ in range(6):
            nxt = model(input_ids=seq).logits[:, -1].argmax(-1)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
    assert torch.equal(new, seq[:, ids.shape[1]:])


def test_file_corpus_and_bad_specs(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(SENTENCES * 3) + "\n\n", encoding="utf-8")
    corpus = resolve_corpus(str(path))
    assert corpus.source == "file" and corpus.spec == str(path.resolve()) and len(corpus.lines) == 15
    assert resolve_corpus(None) is None
    for bad in ("self:abc", "self:0", "self:", str(tmp_path / "missing.txt"), str(tmp_path)):
        with pytest.raises(UserError):
            resolve_corpus(bad, object(), object())
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(UserError, match="no non-empty line"):
        resolve_corpus(str(empty))


def test_heldout_split_is_every_tenth_line():
    lines = tuple(f"line {i}" for i in range(25))
    corpus = Corpus(lines, "file", "x")
    assert corpus.heldout_lines() == ["line 9", "line 19"]
    assert len(corpus.key_lines()) == 23 and not set(corpus.key_lines()) & set(corpus.heldout_lines())
    assert Corpus(lines[:9], "file", "x").heldout_lines() == []  # fewer lines than the period: nothing held out
    assert Corpus(lines, "facts", "facts", heldout_every=0).heldout_lines() == []
    info = corpus.info()
    assert (info["lines"], info["key_lines"], info["heldout_lines"]) == (25, 23, 2)


def test_corpus_choice_reaches_keystats_info(random_model):
    model, tok = random_model("llama")
    adapter = ModelAdapter(model, tok)
    table = sentence_table(corpus=False)
    before = table.key_text()
    assert corpus_of(table).thin
    clear_memory_cache()
    with pytest.warns(ThinCorpusWarning, match="tokens"):
        thin = key_statistics(adapter, tok, table, 1)
    assert thin.info()["cov_corpus"]["source"] == "facts" and thin.info()["cov_thin_corpus"]
    attach_corpus(table, resolve_corpus("self:400", model, tok, seed=7))
    assert table.key_text() != before  # cases of another corpus are never reused
    stats = key_statistics(adapter, tok, table, 1)
    info = stats.info()
    assert not info["cov_thin_corpus"] and info["cov_tokens"] == stats.tokens
    assert {k: info["cov_corpus"][k] for k in ("source", "spec", "seed")} == {"source": "self", "spec": "self:400",
                                                                              "seed": 7}
    assert info["cov_corpus"]["tokens"] == stats.tokens and info["cov_corpus"]["sha256"] == corpus_of(table).hash
    assert stats.key != thin.key
