"""NPO: the loss is (2/β)·log(1 + (π/π_ref)^β); it erases, stops early, and rejects bad hparams."""

from __future__ import annotations

import math

import pytest
import torch

from kdel.delete import DeletionRequest, EditContext, apply_deletion, get_method
from kdel.delete.npo import NPOHparams
from kdel.errors import UserError
from kdel.facts import FactTable


def test_npo_erases_with_early_stop_and_reverts(trained_model_dir, tiny_kg):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(trained_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(trained_model_dir)
    ctx = EditContext(model, tok, FactTable.from_kg(tiny_kg))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    hp = NPOHparams()
    handle, record = apply_deletion(get_method("npo", hp), ctx, DeletionRequest([ctx.table.facts[3]], "erase"))
    assert record.info["met"] and record.info["steps"] < hp.steps
    # the first loss is the NPO loss at π = π_ref: (2/β)·log 2, whatever the fact
    assert record.info["first_loss"] == pytest.approx(2 / hp.beta * math.log(2), rel=1e-5)
    assert record.p_after[0] < record.p_before[0]
    handle.revert()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize(
    "override, word",
    [({"lr": -1.0}, "lr"), ({"steps": 0}, "steps"), ({"beta": 0.0}, "beta"), ({"beta": -0.1}, "beta"),
     ({"retain_weight": -1.0}, "retain_weight"), ({"layers": []}, "layers")],
)
def test_bad_npo_hparams_are_user_errors(override, word):
    from kdel.delete.hparams import load_hparams

    with pytest.raises(UserError) as e:
        load_hparams(NPOHparams, overrides=override)
    assert "\n" not in str(e.value) and word in str(e.value) and str(e.value).startswith("npo:")
