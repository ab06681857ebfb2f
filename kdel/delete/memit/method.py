"""MEMIT (Meng et al. 2023): several facts in one update, spread over a window of MLP layers.

1. For each fact, δ_i is optimised at the residual stream (block output) of the window's top layer, at the
   edit site of its edit texts (as for ROME); the target is z_i = mean residual over the edit texts + δ_i.
2. For each layer l of the window, ascending: K = the facts' averaged keys at l (with the updates so far),
   R = (z − current residual at the top layer) / (layers left), and
   ΔW_l = R Kᵀ (λ C_l + K Kᵀ)⁻¹, solved in float64 (C_l = E[k kᵀ] over the corpus, λ = update_weight).
With one fact and one layer, ΔW is δ (C⁻¹k)ᵀ / (λ + kᵀC⁻¹k): r-ROME's direction, shrunk by λ.
"""

from __future__ import annotations

import torch

from kdel.delete.base import DeletionMethod, DeletionRequest, EditContext, register_method
from kdel.delete.covariance import key_statistics
from kdel.delete.keys import edit_texts, keys_at_site, kl_items_for, optimise_delta, outputs_at_site
from kdel.delete.memit.hparams import MemitHparams
from kdel.delete.objectives import OBJECTIVES


def layer_window(center: int, size: int, n_layers: int) -> list[int]:
    """`size` consecutive layers around `center` (centre of the window), shifted to fit 0..n_layers-1."""
    size = min(size, n_layers)
    start = center - (size - 1) // 2
    start = max(0, min(start, n_layers - size))
    return list(range(start, start + size))


@register_method
class Memit(DeletionMethod):
    name = "memit"
    hparams_class = MemitHparams
    objectives = OBJECTIVES

    def layers_of(self, ctx: EditContext, request: DeletionRequest) -> list[int]:
        center = request.layer if request.layer is not None else ctx.adapter.n_layers // 2
        return layer_window(center, self.hparams.n_layers, ctx.adapter.n_layers)

    def parameters_to_edit(self, ctx: EditContext, request: DeletionRequest) -> list[str]:
        return [ctx.adapter.mlp_out_param_name(layer) for layer in self.layers_of(ctx, request)]

    def edit(self, ctx: EditContext, request: DeletionRequest) -> dict:
        hp = self.hparams
        adapter, tok = ctx.adapter, ctx.tokenizer
        layers = self.layers_of(ctx, request)
        top = adapter.layer(layers[-1])
        texts, per_fact, z = [], [], []
        for i, fact in enumerate(request.facts):
            items = edit_texts(tok, ctx.table, fact, request.site, hp.n_prefixes, hp.n_templates, request.seed)
            kl_items = kl_items_for(tok, ctx.table, fact, request.site, hp.kl_prompts)
            new_target = request.new_targets[i] if request.new_targets else None
            res = optimise_delta(ctx.model, tok, top, items, request.objective, fact.target, new_target, kl_items,
                                 hp.delta_settings(), seed=request.seed + i)
            z.append(outputs_at_site(adapter, tok, top, items).mean(dim=0).cpu() + res.delta.double().cpu())
            texts.append(items)
            per_fact.append({"fact_id": fact.id, "edit_texts": len(items), "kl_prompts": len(kl_items), **res.info("z")})
        z = torch.stack(z)  # (n, d_model)
        per_layer = []
        for j, layer in enumerate(layers):
            keys = torch.stack([keys_at_site(adapter, tok, layer, items).mean(dim=0).cpu() for items in texts])
            cur = torch.stack([outputs_at_site(adapter, tok, top, items).mean(dim=0).cpu() for items in texts])
            resid = (z - cur).T / (len(layers) - j)  # (d_model, n)
            stats = key_statistics(adapter, tok, ctx.table, layer, ctx.cache_dir, ridge=hp.cov_ridge,
                                   max_condition=hp.max_condition, batch_size=hp.cov_batch_size)
            K = keys.T  # (d_mlp, n)
            A = hp.update_weight * stats.C + K @ K.T
            X = torch.linalg.solve(A, K)  # (d_mlp, n) = (λC + K Kᵀ)⁻¹ K
            delta_w = resid @ X.T  # (d_model, d_mlp)
            adapter.add_to_mlp_out(layer, delta_w)
            per_layer.append({"layer": layer, "residual_norm": float(resid.norm()),
                              "delta_w_norm": float(delta_w.norm()), **stats.info()})
        return {"layers": layers, "update_weight": hp.update_weight, "per_layer": per_layer, "facts": per_fact}
