"""Random cheap edits of every method: each changes the weights (hash), and its revert restores them bit for bit."""

from __future__ import annotations

import random

import pytest

from kdel.delete.base import DeletionRequest, EditContext, apply_deletion, get_method
from kdel.delete.hparams import load_hparams
from tests.unit.test_rome_helpers import FACTS, sentence_table, weights_hash

CHEAP = {"steps": 1, "n_prefixes": 1, "kl_prompts": 1, "margin": 100.0}


@pytest.mark.integration  # trains or renders: over the unit tier's budget
def test_hundred_random_edits_revert_bit_for_bit(random_model):
    rng = random.Random(0)
    models = {fam: random_model(fam, n_layers=3, d_model=16) for fam in ("gpt2", "llama")}
    table = sentence_table()
    methods = {name: get_method(name) for name in ("rome", "r-rome", "memit", "alphaedit")}
    for m in methods.values():
        m.hparams = load_hparams(m.hparams_class, overrides=CHEAP)
    for i in range(100):
        fam = rng.choice(sorted(models))
        model, tok = models[fam]
        ctx = EditContext(model, tok, table)
        name = rng.choice(sorted(methods))
        facts = rng.sample(FACTS, rng.choice([1, 1, 2]))
        objective = rng.choice(["erase", "replace", "unknown", "amplify"])
        targets = None
        if objective == "replace":
            targets = [rng.choice([e for e in ("Paris", "Rome", "Ann Lee") if e != f.target]) for f in facts]
        elif objective == "unknown":
            targets = ["<unknown>"] * len(facts)
        request = DeletionRequest(facts, objective, targets, layer=rng.randrange(3),
                                  site=rng.choice(["subject_last", "last"]), seed=i)
        before = weights_hash(model)
        handle, _ = apply_deletion(methods[name], ctx, request)
        assert weights_hash(model) != before, (i, name)
        handle.revert()
        assert weights_hash(model) == before, (i, name)


def test_gradient_methods_revert_bit_for_bit(random_model):
    rng = random.Random(1)
    models = {fam: random_model(fam, n_layers=3, d_model=16) for fam in ("gpt2", "llama")}
    table = sentence_table()
    names = ("ft", "ga", "npo", "simnpo", "rmu")
    methods = {n: get_method(n) for n in names}
    for m in methods.values():
        m.hparams = load_hparams(m.hparams_class, overrides={"steps": 2, "early_stop": False})
    for i in range(20):
        fam = rng.choice(sorted(models))
        model, tok = models[fam]
        ctx = EditContext(model, tok, table)
        name = names[i % len(names)]
        request = DeletionRequest(rng.sample(FACTS, rng.choice([1, 2])), "erase", layer=rng.randrange(3), seed=i)
        before = weights_hash(model)
        handle, record = apply_deletion(methods[name], ctx, request)
        assert weights_hash(model) != before and record.site is None, (i, name)
        handle.revert()
        assert weights_hash(model) == before, (i, name)
