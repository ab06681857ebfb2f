"""Batched scoring equals one-by-one scoring, on every supported family (padding-correct)."""

import numpy as np
import pytest

from kdel.models.scoring import encode_prompt_target, next_token_logprobs, score_targets

PROMPTS = ["Maria Lopez works with", "John Smith is a colleague of", "Ann Lee was born in", "Maria Lopez lives in"]
TARGETS = ["John Smith", "Ann Lee", "Rome", "Paris"]


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_batched_scoring_equals_one_by_one(random_model, family):
    model, tok = random_model(family)
    batched = score_targets(model, tok, PROMPTS, TARGETS, batch_size=4)
    for i, (p, t) in enumerate(zip(PROMPTS, TARGETS)):
        single = score_targets(model, tok, [p], [t], batch_size=1)
        assert abs(batched.logprob[i] - single.logprob[0]) < 1e-5
        assert abs(batched.first_token_logprob[i] - single.first_token_logprob[0]) < 1e-5
        assert batched.recalled[i] == single.recalled[0]
        assert batched.first_token_rank[i] == single.first_token_rank[0]
    lp = next_token_logprobs(model, tok, PROMPTS, batch_size=4)
    for i, p in enumerate(PROMPTS):
        assert np.allclose(lp[i].numpy(), next_token_logprobs(model, tok, [p])[0].numpy(), atol=1e-5)


def test_whole_object_logprob_is_sum_of_token_logprobs(random_model):
    import torch

    model, tok = random_model("gpt2")
    p_ids, t_ids = encode_prompt_target(tok, PROMPTS[0], TARGETS[0])
    assert len(t_ids) == 2 and p_ids[0] == tok.bos_token_id
    with torch.no_grad():
        logits = model(torch.tensor([p_ids + t_ids])).logits[0]
    lp = torch.log_softmax(logits.double(), -1)
    expected = lp[len(p_ids) - 1, t_ids[0]] + lp[len(p_ids), t_ids[1]]
    got = score_targets(model, tok, PROMPTS[:1], TARGETS[:1]).logprob[0]
    assert abs(got - float(expected)) < 1e-5
