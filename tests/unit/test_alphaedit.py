"""AlphaEdit: the update leaves the preserved keys' MLP outputs unchanged while the edited fact changes; with
no preserved set it is the unprojected update; the projection is computed once and cached; it reverts."""

from __future__ import annotations

import pytest
import torch

from kdel.delete import DeletionRequest, EditContext, apply_deletion, get_method
from kdel.delete.alphaedit.projection import clear_memory_cache, null_space_projection
from kdel.delete.hparams import load_hparams
from kdel.delete.memit import Memit
from kdel.facts import FactTable
from kdel.models.hooks import record_inputs
from kdel.models.scoring import _pad_batch, encode_prompt
from tests.conftest import SENTENCES
from tests.unit.test_rome_helpers import FACTS, memorized_model, weights_hash

SHARED = {"steps": 40, "n_prefixes": 0, "clamp_factor": 4.0}
EDITED = FACTS[2]  # "John Smith is a colleague of" -> "Ann Lee"


def preserved_table() -> FactTable:
    """The facts, with a corpus (the preserved knowledge) that does not contain the edited fact's sentence."""
    corpus = [s for s in SENTENCES if not s.startswith(EDITED.prompt)]
    assert len(corpus) == len(SENTENCES) - 1
    return FactTable(list(FACTS), "facts", "sentences", corpus=corpus)


def _method(name, **over):
    m = get_method(name)
    m.hparams = load_hparams(m.hparams_class, overrides={**SHARED, **over})
    return m


def corpus_keys(ctx, layer: int) -> torch.Tensor:
    """Every corpus token's key at `layer` (the preserved set K0), float64: (n_tokens, d_mlp)."""
    ids = [encode_prompt(ctx.tokenizer, s) for s in ctx.table.corpus]
    x, mask = _pad_batch(ids, ctx.tokenizer.pad_token_id, "cpu")
    with torch.no_grad(), record_inputs({"k": ctx.adapter.mlp_out(layer)}) as store:
        ctx.model(input_ids=x, attention_mask=mask)
    return store["k"][mask.bool()].double()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_preserved_keys_outputs_stay_while_the_fact_is_erased(family):
    model, tok = memorized_model(family)
    ctx = EditContext(model, tok, preserved_table())
    # fewer corpus tokens than key dimensions: K0 spans a proper subspace, its complement is an exact null space
    method = _method("alphaedit", nullspace_threshold=1e-8)
    request = DeletionRequest([EDITED], "erase", layer=1, site="last")
    layers = method.layers_of(ctx, request)
    K0 = {layer: corpus_keys(ctx, layer) for layer in layers}
    W0 = {layer: ctx.adapter.mlp_out_weight(layer).detach().double().clone() for layer in layers}
    handle, record = apply_deletion(method, ctx, request)
    assert record.efficacy[0].success and record.p_after[0] < 0.5 * record.p_before[0]
    for layer in layers:
        dW = ctx.adapter.mlp_out_weight(layer).detach().double() - W0[layer]
        assert float(dW.norm()) > 1e-3  # every layer of the window really moved
        ratio = (K0[layer] @ dW.T).norm(dim=1) / (K0[layer] @ W0[layer].T).norm(dim=1)
        assert float(ratio.max()) <= 1e-4, (layer, float(ratio.max()))
        assert record.info["per_layer"][layers.index(layer)]["nullspace_dim"] > 0
    handle.revert()
    # MEMIT's update on the same request does move the preserved keys: the projection is what keeps them
    handle, _ = apply_deletion(_method("memit"), ctx, request)
    layer = layers[0]
    dW = ctx.adapter.mlp_out_weight(layer).detach().double() - W0[layer]
    ratio = (K0[layer] @ dW.T).norm(dim=1) / (K0[layer] @ W0[layer].T).norm(dim=1)
    assert float(ratio.max()) > 1e-3  # ten times the bound AlphaEdit keeps
    handle.revert()


class RidgeMemit(Memit):
    """MEMIT with α·I in place of λC: the unprojected update R Kᵀ (K Kᵀ + α I)⁻¹ (not registered)."""

    alphas: list[float] = []

    def solve_update(self, ctx, layer, resid, K, stats):
        A = self.alphas.pop(0) * torch.eye(K.shape[0], dtype=torch.float64) + K @ K.T
        return resid @ torch.linalg.solve(A, K).T, {}


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_without_a_preserved_set_it_is_the_unprojected_update(family):
    model, tok = memorized_model(family)
    ctx = EditContext(model, tok, preserved_table())
    request = DeletionRequest([EDITED, FACTS[3]], "erase", layer=1, site="last")
    ae = _method("alphaedit", preserve="none")
    names = ae.parameters_to_edit(ctx, request)
    before = {n: model.get_parameter(n).detach().double().clone() for n in names}
    h, rec = apply_deletion(ae, ctx, request)
    alphas = [p["alpha"] for p in rec.info["per_layer"]]
    d_ae = {n: model.get_parameter(n).detach().double() - before[n] for n in names}
    h.revert()
    ridge = RidgeMemit(load_hparams(RidgeMemit.hparams_class, overrides=SHARED))
    ridge.alphas = list(alphas)  # AlphaEdit's α of each layer (l2 · tr C)
    h, _ = apply_deletion(ridge, ctx, request)
    for n in names:
        d_ridge = model.get_parameter(n).detach().double() - before[n]
        assert float(d_ae[n].norm()) > 1e-3
        assert torch.allclose(d_ae[n], d_ridge, rtol=1e-4, atol=1e-6 * float(d_ridge.abs().max()))
    h.revert()
    assert all(p["preserve"] == "none" for p in rec.info["per_layer"])
    # and the projection of an empty set of keys (C = 0) is the identity
    P, dim, _ = null_space_projection(torch.zeros(6, 6, dtype=torch.float64), 1e-2)
    assert dim == 6 and torch.equal(P, torch.eye(6, dtype=torch.float64))


def test_projection_matches_its_definition_and_is_cached_beside_the_key_statistics(tmp_path):
    torch.manual_seed(0)
    K0 = torch.randn(40, 8, dtype=torch.float64) @ torch.diag(torch.tensor([5.0, 4, 3, 2, 1, 1e-3, 1e-4, 1e-5], dtype=torch.float64))
    C = K0.T @ K0 / 40
    P, dim, lam = null_space_projection(C, 1e-2)
    evals, evecs = torch.linalg.eigh(C)
    U = evecs[:, evals <= 1e-2 * evals[-1]]
    assert dim == 3 and torch.allclose(P, U @ U.T) and torch.allclose(P @ P, P)
    assert lam == pytest.approx(float(evals[-1]))
    # ||P k0||^2 <= n * (sum of the null-space eigenvalues) for every preserved key
    assert float(((K0 @ P) ** 2).sum(dim=1).max()) <= 40 * float(evals[evals <= 1e-2 * evals[-1]].sum()) * (1 + 1e-9)

    model, tok = memorized_model("gpt2")
    ctx = EditContext(model, tok, preserved_table(), cache_dir=tmp_path)
    method = _method("alphaedit", steps=2)
    request = DeletionRequest([EDITED], "erase", layer=1, site="last")
    original = weights_hash(model)
    clear_memory_cache()
    h, first = apply_deletion(method, ctx, request)
    h.revert()
    files = sorted(p.name for p in (tmp_path / "keystats").iterdir() if ".null-" in p.name)
    assert len(files) == 3  # one per layer of the window, next to the key statistics
    h, again = apply_deletion(method, ctx, request)
    h.revert()
    clear_memory_cache()
    h, disk = apply_deletion(method, ctx, request)
    h.revert()
    assert [p["nullspace_cache"] for p in first.info["per_layer"]] == ["none"] * 3
    assert [p["nullspace_cache"] for p in again.info["per_layer"]] == ["memory"] * 3
    assert [p["nullspace_cache"] for p in disk.info["per_layer"]] == ["disk"] * 3
    assert first.delta_norms == disk.delta_norms
    assert weights_hash(model) == original
