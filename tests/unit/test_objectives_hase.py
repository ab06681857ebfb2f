"""Hase et al.'s editing problems on the trained tiny model: each objective moves the intended probability in
the intended direction, checked independently of the library's own scoring (noise added through
`inputs_embeds` here, a forward hook in the library)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdel.delete import DeletionRequest, EditContext, apply_deletion, get_method
from kdel.delete.hparams import load_hparams
from kdel.errors import UserError
from kdel.facts import FactTable
from kdel.models.scoring import encode_prompt_target, score_targets
from kdel.trace.corrupt import embedding_std, gaussian_noise, subject_token_positions

FACT_IDS = (0, 7)
EDITORS = ("rome", "r-rome", "memit", "ft")


@pytest.fixture(scope="module")
def ctx(trained_model_dir, tiny_kg, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(trained_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(trained_model_dir)
    return EditContext(model, tok, FactTable.from_kg(tiny_kg), cache_dir=tmp_path_factory.mktemp("cache"))


def noised_p(ctx, fact, target: str, samples: int = 10, seed: int = 12345) -> np.ndarray:
    """p(target | canonical prompt) with 3σ Gaussian noise on the subject's token embeddings, per draw."""
    model, tok = ctx.model, ctx.tokenizer
    p_ids, t_ids = encode_prompt_target(tok, fact.prompt, target)
    ids = torch.tensor([p_ids + t_ids])
    pos = subject_token_positions(tok, fact.prompt, fact.subject)
    wte = model.get_input_embeddings()
    noise = gaussian_noise(samples, len(pos), wte.weight.shape[1], 3 * embedding_std(wte.weight), seed, fact.id)
    out = []
    with torch.no_grad():
        for j in range(samples):
            emb = wte(ids).clone()
            emb[0, pos] += noise[j].float()
            lp = torch.log_softmax(model(inputs_embeds=emb).logits[0].float(), -1)
            out.append(sum(float(lp[len(p_ids) - 1 + k, t]) for k, t in enumerate(t_ids)))
    return np.exp(out)


def test_tracing_reversal_target_is_the_noised_models_prediction(ctx):
    fact = ctx.table.facts[FACT_IDS[0]]
    handle, record = apply_deletion(get_method("ft"), ctx, DeletionRequest([fact], "tracing_reversal", seed=0))
    (target,) = record.new_targets
    handle.revert()
    assert record.target_sources == ["corrupted_prediction"] and target != fact.target
    objects = sorted({f.target for f in ctx.table.facts} - {fact.target})
    # brute force over every object (the library pre-selects by first token), with the library's noise seed
    means = {o: noised_p(ctx, fact, o, seed=0).mean() for o in objects}
    assert max(means, key=means.get) == target
    assert record.info["new_targets"][0]["p_noised"] == pytest.approx(means[target], rel=1e-4)
    clean = score_targets(ctx.model, ctx.tokenizer, [fact.prompt], [target]).prob[0]
    assert means[target] > clean  # it is what the corrupted model says, not the clean one


@pytest.mark.parametrize("method", ["ft", "rome"])
def test_fact_forcing_raises_p_o_under_fresh_subject_noise(ctx, method):
    fact = ctx.table.facts[FACT_IDS[0]]
    m = get_method(method)
    if method == "rome":
        m.hparams = load_hparams(m.hparams_class, overrides={"n_prefixes": 1, "steps": 20})
    before = noised_p(ctx, fact, fact.target)
    clean_before = score_targets(ctx.model, ctx.tokenizer, [fact.prompt], [fact.target]).prob[0]
    handle, record = apply_deletion(m, ctx, DeletionRequest([fact], "fact_forcing", layer=1, site="last"))
    after = noised_p(ctx, fact, fact.target)  # noise draws neither the optimisation nor the probe used
    handle.revert()
    assert after.mean() > before.mean() + 0.05
    assert before.mean() < clean_before  # the noise does hurt recall: there is something to force
    eff = record.efficacy[0]
    assert eff.noised and eff.aim_target == fact.target and eff.aim_p_after > eff.aim_p_before
    assert record.info["noise"]["samples"] == 10


def test_unsupported_combinations_are_user_errors(ctx):
    fact = ctx.table.facts[0]
    for method, objective in [("ga", "fact_forcing"), ("npo", "tracing_reversal"), ("ga", "amplify")]:
        with pytest.raises(UserError, match="does not support objective"):
            apply_deletion(get_method(method), ctx, DeletionRequest([fact], objective))
    with pytest.raises(UserError, match="takes no new target"):
        apply_deletion(get_method("ft"), ctx, DeletionRequest([fact], "fact_forcing", new_targets=["x"]))


@pytest.mark.slow
@pytest.mark.parametrize("method", EDITORS)
def test_every_objective_moves_its_probability_the_intended_way(ctx, method):
    m = get_method(method)
    if method != "ft":  # fewer context prefixes: fact forcing multiplies the edit texts by 10 noise draws
        m.hparams = load_hparams(m.hparams_class, overrides={"n_prefixes": 2})
    for fid in FACT_IDS:
        fact = ctx.table.facts[fid]
        for objective in ("erase", "replace", "error_injection", "unknown", "amplify", "tracing_reversal",
                          "fact_forcing"):
            handle, record = apply_deletion(m, ctx, DeletionRequest([fact], objective, layer=1, site="last"))
            try:
                eff = record.efficacy[0]
                if objective == "fact_forcing":
                    moved = noised_p(ctx, fact, fact.target).mean() - eff.aim_p_before
                else:
                    moved = score_targets(ctx.model, ctx.tokenizer, [fact.prompt], [eff.aim_target]).prob[0] \
                        - eff.aim_p_before
            finally:
                handle.revert()
            if objective == "erase":
                assert moved < -0.1, (method, objective, fid, moved)
            else:
                assert moved > 0, (method, objective, fid, moved)
                assert eff.aim_target == (fact.target if objective in ("amplify", "fact_forcing")
                                          else record.new_targets[0])
