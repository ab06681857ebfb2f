"""Key statistics: C equals a direct computation; the disk cache is reused, and invalidated by the weights
that determine the key (not by a name), by the layer and by the corpus; ridge and thin-corpus warning.
Several layers in one streamed pass that never runs a block above the deepest one (GPT-2, Llama, NeoX)."""

from __future__ import annotations

import warnings

import pytest
import torch

from kdel.delete.corpus import corpus_of
from kdel.delete.covariance import (
    SmallCorpusWarning,
    ThinCorpusWarning,
    clear_memory_cache,
    key_statistics,
    key_statistics_many,
    key_weights_hashes,
)
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


# -- several layers in one pass that stops at the deepest (DESIGN §13) ----------------------------------------
FAMILIES = ["gpt2", "llama", "gpt_neox"]
LONG_CORPUS = [f"{a} {b}" for a in SENTENCES for b in SENTENCES]  # 25 lines: lines 9, 19 are held out


def _corpus_table(lines=LONG_CORPUS):
    table = sentence_table()
    table.corpus = list(lines)
    return table


def _count_block_calls(adapter):
    """Forward pre-hooks on every block, the final norm and the unembedding: {name: calls}."""
    calls = {}
    handles = []
    named = {f"block{i}": adapter.layer(i) for i in range(adapter.n_layers)}
    named.update(final_norm=adapter.final_norm, unembed=adapter.unembed)
    for name, mod in named.items():
        calls[name] = 0

        def hook(_m, _inp, name=name):
            calls[name] += 1

        handles.append(mod.register_forward_pre_hook(hook))
    return calls, handles


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_never_runs_blocks_above_the_deepest_layer(random_model, family):
    model, tok = random_model(family, n_layers=4)
    adapter = ModelAdapter(model, tok)
    clear_memory_cache()
    calls, handles = _count_block_calls(adapter)
    try:
        stats = key_statistics_many(adapter, tok, _corpus_table(), [0, 1], batch_size=4)
    finally:
        for h in handles:
            h.remove()
    batches = -(-len(corpus_of(_corpus_table()).key_lines()) // 4)
    assert calls["block0"] == calls["block1"] == batches  # every batch ran blocks 0 and 1 ...
    assert calls["block2"] == calls["block3"] == calls["final_norm"] == calls["unembed"] == 0  # ... and nothing above
    assert set(stats) == {0, 1}


def _direct_many(model, tok, adapter, layers, lines):
    """One-shot reference: the whole model on each line alone, every key kept, then KᵀK / n."""
    keys = {layer: [] for layer in layers}
    for line in lines:
        ids = torch.tensor([tok(line)["input_ids"]])
        with record_inputs({layer: adapter.mlp_out(layer) for layer in layers}) as st:
            model(input_ids=ids)
        for layer in layers:
            keys[layer].append(st[layer][0].double())
    out = {}
    for layer in layers:
        k = torch.cat(keys[layer])
        out[layer] = (k.T @ k / k.shape[0], k.shape[0])
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_streamed_multi_layer_pass_equals_one_shot(random_model, family):
    model, tok = random_model(family, n_layers=4)
    adapter = ModelAdapter(model, tok)
    clear_memory_cache()
    table = _corpus_table()
    corpus = corpus_of(table)
    assert len(corpus.heldout_lines()) == 2 and corpus.heldout_lines() == [LONG_CORPUS[9], LONG_CORPUS[19]]
    # batch_size 3 and a 40-token cap: many small, padded batches
    stats = key_statistics_many(adapter, tok, table, [2, 0, 1], batch_size=3, max_batch_tokens=40, max_condition=1e300)
    direct = _direct_many(model, tok, adapter, [0, 1, 2], corpus.key_lines())  # held-out lines never count
    for layer in (0, 1, 2):
        ref, n = direct[layer]
        raw = stats[layer].C - stats[layer].ridge * torch.eye(ref.shape[0], dtype=torch.float64)
        assert stats[layer].tokens == n
        assert torch.allclose(raw, ref, rtol=0, atol=1e-6 * float(ref.abs().max()))
        assert float((raw - ref).abs().max()) <= 1e-6
    # the single-layer entry point gives the same C
    assert torch.equal(key_statistics(adapter, tok, table, 1, max_condition=1e300).C, stats[1].C)


@pytest.mark.parametrize("family", FAMILIES)
def test_multi_layer_cache_hits_and_partial_recompute(random_model, family, tmp_path):
    model, tok = random_model(family, n_layers=4)
    adapter = ModelAdapter(model, tok)
    table = _corpus_table()
    clear_memory_cache()
    first = key_statistics_many(adapter, tok, table, [0, 2], cache_dir=tmp_path)
    assert {s.cache_hit for s in first.values()} == {"none"}
    assert len({s.key for s in first.values()}) == 2  # different layers, different keys
    assert len(list((tmp_path / "keystats").glob("*.safetensors"))) == 2
    again = key_statistics_many(adapter, tok, table, [0, 2], cache_dir=tmp_path)
    assert {s.cache_hit for s in again.values()} == {"memory"}
    clear_memory_cache()
    calls, handles = _count_block_calls(adapter)
    try:
        mixed = key_statistics_many(adapter, tok, table, [0, 1, 2], cache_dir=tmp_path)
    finally:
        for h in handles:
            h.remove()
    assert mixed[0].cache_hit == mixed[2].cache_hit == "disk" and mixed[1].cache_hit == "none"
    assert calls["block1"] > 0 and calls["block2"] == 0  # only layer 1 was missing: the pass stopped there
    assert torch.equal(mixed[0].C, first[0].C) and torch.equal(mixed[2].C, first[2].C)
    assert mixed[0].condition == first[0].condition  # the cached eigenvalues give the same condition number
    # each layer's entry is the one the single-layer function finds
    assert key_statistics(adapter, tok, table, 1, cache_dir=tmp_path).key == mixed[1].key


def _naive_weights_hash(adapter, layer):
    import hashlib

    arch = adapter.arch
    skip = tuple(arch.layer.format(j) + "." for j in range(layer + 1, adapter.n_layers))
    skip += (arch.mlp_out.format(layer) + ".", arch.final_norm + ".", arch.unembed + ".")
    h = hashlib.sha256()
    for name, p in adapter.model.named_parameters():
        if not name.startswith(skip):
            h.update(f"{name}|{p.dtype}|{tuple(p.shape)}\n".encode())
            h.update(p.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("family", FAMILIES)
def test_one_sweep_hashes_equal_per_layer_hashes(random_model, family):
    model, tok = random_model(family, n_layers=4)
    adapter = ModelAdapter(model, tok)
    hashes = key_weights_hashes(adapter, [3, 0, 2, 1])
    assert hashes == {layer: _naive_weights_hash(adapter, layer) for layer in range(4)}
    assert len(set(hashes.values())) == 4


def test_small_corpus_warning(random_model):
    model, tok = random_model("llama", n_layers=2)  # d (key dimension) = 128: 1280 tokens needed
    adapter = ModelAdapter(model, tok)
    clear_memory_cache()
    with pytest.warns(SmallCorpusWarning, match=r"fewer than 10 x d = 1280"):
        small = key_statistics(adapter, tok, _corpus_table(), 1)
    assert small.tokens < 1280
    big = _corpus_table(LONG_CORPUS * 8)  # 200 lines, about 2000 key tokens
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = key_statistics(adapter, tok, big, 1)
    assert stats.tokens >= 1280
    info = stats.info()["cov_corpus"]
    assert info["source"] == "file" and info["tokens"] == stats.tokens and info["heldout_lines"] == 20
