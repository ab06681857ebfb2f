"""The adapter finds layers, MLP output matrices, embeddings, final norm and unembedding per family."""

import pytest
import torch

from kdel.errors import UserError
from kdel.models.adapter import ModelAdapter
from kdel.models.hooks import record_inputs, record_outputs


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_adapter_maps_every_family(random_model, family):
    model, tok = random_model(family, n_layers=3, d_model=32)
    ad = ModelAdapter(model, tok)
    assert ad.n_layers == 3 and ad.d_model == 32
    for i in range(3):
        w = ad.mlp_out_weight(i)
        assert w.shape == (32, ad.d_mlp(i)) and ad.d_mlp(i) == 128
        # v = W k: the MLP output projection maps its recorded input to its recorded output
        ids = torch.tensor([tok("Maria Lopez works with")["input_ids"]])
        with record_inputs({"k": ad.mlp_out(i)}) as kin, record_outputs({"v": ad.mlp_out(i)}) as vout:
            model(ids)
        bias = getattr(ad.mlp_out(i), "bias", None)
        v = kin["k"] @ w.T + (bias if bias is not None else 0)
        assert torch.allclose(v, vout["v"], atol=1e-5)
    assert ad.embedding_matrix().shape[0] == len(tok)
    assert ad.unembedding_matrix().shape == (len(tok), 32)
    assert isinstance(ad.final_norm, torch.nn.Module)
    with pytest.raises(UserError, match="out of range"):
        ad.layer(3)


def test_add_to_mlp_out_respects_storage_orientation(random_model):
    for family in ("gpt2", "llama"):
        model, tok = random_model(family)
        ad = ModelAdapter(model, tok)
        before = ad.mlp_out_weight(1).detach().clone()
        delta = torch.zeros_like(before)
        delta[3, 7] = 1.0
        ad.add_to_mlp_out(1, delta)
        assert torch.equal(ad.mlp_out_weight(1) - before, delta)
