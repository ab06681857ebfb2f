"""Fluency checks: ROME's n-gram entropy against hand-computed values, batched perplexity against a one-line-at-a-
time computation, greedy generation, and the `wrecked` flag: a huge ΔW trips it, an ordinary ROME edit does not."""

from __future__ import annotations

import math

import pytest
import torch

from kdel.delete.corpus import corpus_of
from kdel.models.fluency import (
    DEFAULT_PROMPTS,
    FluencyCheck,
    FluencyConfig,
    FluencyScore,
    choose_prompts,
    compare_fluency,
    generation_entropy,
    greedy_generations,
    heldout_perplexity,
    ngram_entropy,
    weighted_ngram_entropy,
)
from tests.conftest import SENTENCES


def test_ngram_entropy_by_hand():
    # "a b a b": bigrams ab, ba, ab -> H = h(1/3); trigrams aba, bab -> H = 1 bit
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy(["a", "b", "a", "b"], 2) == pytest.approx(h2)
    assert ngram_entropy(["a", "b", "a", "b"], 3) == pytest.approx(1.0)
    assert weighted_ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    # punctuation is a word: "a , a , a , a , a" has bigrams (a ,) x4, (, a) x4; trigrams (a , a) x4, (, a ,) x3
    h3 = -(4 / 7 * math.log2(4 / 7) + 3 / 7 * math.log2(3 / 7))
    assert weighted_ngram_entropy("a, a, a, a, a") == pytest.approx((2 / 3 * 1.0 + 4 / 3 * h3) / 2)
    assert weighted_ngram_entropy("day day day day day") == 0.0  # pure repetition
    assert weighted_ngram_entropy("one") == 0.0
    eight = " ".join(f"w{i}" for i in range(8))  # 7 distinct bigrams, 6 distinct trigrams
    assert weighted_ngram_entropy(eight) == pytest.approx((2 / 3 * math.log2(7) + 4 / 3 * math.log2(6)) / 2)
    assert generation_entropy(["a b a b", "day day day"]) == pytest.approx(weighted_ngram_entropy("a b a b") / 2)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_batched_perplexity_equals_line_by_line(random_model, family):
    model, tok = random_model(family)
    lines = SENTENCES * 2
    ppl, n = heldout_perplexity(model, tok, lines, max_tokens=10_000, batch_size=3)
    nll, count = 0.0, 0
    with torch.no_grad():
        for line in lines:
            ids = torch.tensor([tok(line)["input_ids"]])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
            nll -= float(logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum())
            count += ids.shape[1] - 1
    assert n == count
    assert ppl == pytest.approx(math.exp(nll / count), rel=1e-5)
    capped, m = heldout_perplexity(model, tok, lines, max_tokens=7)
    assert m == 7 and math.isfinite(capped)
    assert math.isnan(heldout_perplexity(model, tok, [], 100)[0])


def test_greedy_generations_and_prompt_choice(random_model):
    model, tok = random_model("llama")
    assert not all(t in tok.get_vocab() for t in ("The", "My"))  # a toy vocabulary: English prompts are unknown
    prompts = choose_prompts(tok, SENTENCES * 3, n=3)
    assert prompts == ["Maria Lopez", "John Smith", "Ann Lee"]
    texts = greedy_generations(model, tok, prompts + ["Maria Lopez lives"], max_new_tokens=5, batch_size=2)
    for prompt, text in zip(prompts + ["Maria Lopez lives"], texts):  # one prompt at a time, no cache
        seq = torch.tensor([tok(prompt)["input_ids"]])
        with torch.no_grad():
            for _ in range(5):
                seq = torch.cat([seq, model(input_ids=seq).logits[:, -1].argmax(-1)[:, None]], dim=1)
        assert text == tok.decode(seq[0].tolist(), skip_special_tokens=True)
        assert text.startswith(prompt)
    assert texts == greedy_generations(model, tok, prompts + ["Maria Lopez lives"], 5)  # deterministic


def test_english_prompts_for_an_open_vocabulary():
    from tests.fixtures_real import gpt2_style_tokenizer

    tok = gpt2_style_tokenizer(SENTENCES, vocab_size=300)  # byte-level BPE: encodes any text
    assert choose_prompts(tok, SENTENCES) == list(DEFAULT_PROMPTS)


def test_verdict_thresholds():
    before = FluencyScore(entropy=4.0, perplexity=10.0, perplexity_tokens=100)
    ok = compare_fluency(before, FluencyScore(3.0, 19.0, 100))  # drop 0.25, ratio 1.9
    assert not ok["fluency_wrecked"] and ok["fluency_ppl_ratio"] == pytest.approx(1.9)
    assert ok["fluency_entropy_drop"] == pytest.approx(0.25)
    assert compare_fluency(before, FluencyScore(4.0, 25.0, 100))["fluency_wrecked_by"] == ["perplexity"]
    assert compare_fluency(before, FluencyScore(2.0, 10.0, 100))["fluency_wrecked_by"] == ["entropy"]
    loose = FluencyConfig(max_ppl_ratio=3.0)
    assert not compare_fluency(before, FluencyScore(4.0, 25.0, 100), loose)["fluency_wrecked"]
    no_text = compare_fluency(FluencyScore(4.0, float("nan"), 0), FluencyScore(4.0, float("nan"), 0))
    assert not no_text["fluency_wrecked"] and math.isnan(no_text["fluency_ppl_ratio"])


def test_huge_delta_w_is_wrecked_an_ordinary_rome_edit_is_not(trained_model_dir, tiny_kg):
    from kdel.delete.base import DeletionRequest, EditContext, apply_deletion, get_method
    from kdel.facts import FactTable
    from kdel.models.loading import load_model
    from kdel.models.scoring import score_targets

    table = FactTable.from_kg(tiny_kg)
    model, tok = load_model(trained_model_dir, kg_hash=table.source_hash)
    corpus = corpus_of(table)
    check = FluencyCheck(model, tok, corpus.heldout_lines(), prompt_lines=list(corpus.lines))
    assert check.before.perplexity_tokens > 100 and check.before.entropy > 1.0
    ctx = EditContext(model, tok, table)
    # an ordinary edit: ROME erases one recalled fact
    fact = next(f for f in table.facts if score_targets(model, tok, [f.prompt], [f.target]).recalled[0])
    handle, _ = apply_deletion(get_method("rome"), ctx, DeletionRequest([fact], "erase", layer=1, site="last"))
    try:
        assert not score_targets(model, tok, [fact.prompt], [fact.target]).recalled[0]  # the edit did something
        ordinary = check.after(model)
    finally:
        handle.revert()
    assert not ordinary["fluency_wrecked"] and ordinary["fluency_ppl_ratio"] < 1.2
    # a wrecking edit: a random ΔW of 100 x ||W|| on layer 0's MLP output matrix
    w = ctx.adapter.mlp_out_weight(0)
    original = w.detach().clone()
    noise = torch.randn(w.shape, generator=torch.Generator().manual_seed(0))
    ctx.adapter.add_to_mlp_out(0, noise * (100 * w.norm() / noise.norm()))
    try:
        wrecked = check.after(model)
    finally:
        with torch.no_grad():
            w.copy_(original)
    assert wrecked["fluency_after_perplexity"] > 2 * wrecked["fluency_before_perplexity"]
    assert wrecked["fluency_wrecked"] and "perplexity" in wrecked["fluency_wrecked_by"]
    assert check.after(model)["fluency_ppl_ratio"] == pytest.approx(1.0)  # restored: back to the start
