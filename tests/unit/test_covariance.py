"""Key statistics: C equals a direct computation; the disk cache is reused, and invalidated by the weights
that determine the key (not by a name), by the layer and by the corpus; ridge and thin-corpus warning."""

from __future__ import annotations

import pytest
import torch

from kdel.delete.covariance import ThinCorpusWarning, clear_memory_cache, key_statistics
from kdel.models.adapter import ModelAdapter
from kdel.models.hooks import record_inputs
from tests.conftest import SENTENCES
from tests.unit.test_rome_helpers import sentence_table


def _direct(model, tok, adapter, layer, lines):
    keys = []
    for line in lines:  # one sentence at a time: no padding involved
        ids = torch.tensor([tok(line)["input_ids"]])
        with record_inputs({"k": adapter.mlp_out(layer)}) as st:
            model(input_ids=ids)
        keys.append(st["k"][0].double())
    k = torch.cat(keys)
    return k.T @ k / k.shape[0], k.shape[0]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_c_equals_direct_computation(random_model, family):
    model, tok = random_model(family)
    adapter = ModelAdapter(model, tok)
    clear_memory_cache()
    stats = key_statistics(adapter, tok, sentence_table(), 1, cache_dir=None, batch_size=2, max_condition=1e300)
    direct, n = _direct(model, tok, adapter, 1, SENTENCES)
    assert stats.tokens == n == sum(len(tok(s)["input_ids"]) for s in SENTENCES)
    raw = stats.C - stats.ridge * torch.eye(direct.shape[0], dtype=torch.float64)
    assert torch.allclose(raw, direct, rtol=1e-5, atol=1e-7)
    assert stats.tokens < direct.shape[0] and stats.ridge > 0  # fewer tokens than dimensions: regularised
    assert stats.condition_used < stats.condition


def test_disk_cache_reuse_and_invalidation(random_model, tmp_path):
    model, tok = random_model("gpt2")
    adapter = ModelAdapter(model, tok)
    table = sentence_table()
    clear_memory_cache()
    first = key_statistics(adapter, tok, table, 1, cache_dir=tmp_path)
    assert first.cache_hit == "none"
    assert len(list((tmp_path / "keystats").glob("*.safetensors"))) == 1
    clear_memory_cache()
    again = key_statistics(adapter, tok, table, 1, cache_dir=tmp_path)
    assert again.cache_hit == "disk" and torch.equal(again.C, first.C)
    assert key_statistics(adapter, tok, table, 1, cache_dir=tmp_path).cache_hit == "memory"
    # editing this layer's own output projection or a later layer does not change the keys: reused
    with torch.no_grad():
        adapter.mlp_out_weight(1).add_(0.5)
        adapter.mlp_out_weight(2).add_(0.5)
    assert key_statistics(adapter, tok, table, 1, cache_dir=tmp_path).key == first.key
    # an earlier layer changes the keys (e.g. a retrained model under the same name): recomputed
    with torch.no_grad():
        adapter.mlp_out_weight(0).mul_(1.5)
    changed = key_statistics(adapter, tok, table, 1, cache_dir=tmp_path)
    assert changed.cache_hit == "none" and changed.key != first.key
    assert not torch.allclose(changed.C, first.C)
    # another layer or another corpus: another entry
    assert key_statistics(adapter, tok, table, 2, cache_dir=tmp_path).key != changed.key
    table2 = sentence_table()
    table2.corpus = table2.corpus[:3]
    other = key_statistics(adapter, tok, table2, 1, cache_dir=tmp_path)
    assert other.key != changed.key and other.tokens < changed.tokens
    # a corrupted cache file is recomputed, not trusted
    clear_memory_cache()
    path = tmp_path / "keystats" / f"{changed.key}.safetensors"
    path.write_bytes(b"garbage")
    assert key_statistics(adapter, tok, table, 1, cache_dir=tmp_path).cache_hit == "none"


def test_thin_corpus_warns(random_model):
    model, tok = random_model("gpt2")
    adapter = ModelAdapter(model, tok)
    with pytest.warns(ThinCorpusWarning):
        stats = key_statistics(adapter, tok, sentence_table(corpus=False), 1)
    assert stats.thin_corpus and stats.info()["cov_thin_corpus"]
