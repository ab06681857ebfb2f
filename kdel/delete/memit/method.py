"""MEMIT (Meng et al. 2023): several facts in one update, spread over a window of MLP layers.

1. For each fact, δ_i is optimised at the residual stream (block output) of the window's top layer, at the
   edit site of its edit texts (kdel.delete.values, as for ROME); the target is z_i = mean residual over the
   edit texts + δ_i.
2. Key statistics C_l = E[k kᵀ] over the corpus for every layer of the window, on the unedited model (as the
   reference code; cached per (weights up to l, corpus)).
3. For each layer l of the window, ascending: K = the facts' averaged keys at l (with the updates so far),
   R = (z − current residual at the top layer) / (layers left), and `solve_update`:
   ΔW_l = R Kᵀ (λ C_l + K Kᵀ)⁻¹, solved in float64 (λ = update_weight). AlphaEdit overrides this step only.
With one fact and one layer, ΔW is δ (C⁻¹k)ᵀ / (λ + kᵀC⁻¹k): r-ROME's direction, shrunk by λ.
"""

from __future__ import annotations

import torch

from kdel.delete.base import DeletionMethod, DeletionRequest, EditContext, register_method
from kdel.delete.covariance import KeyStats, method_key_statistics
from kdel.delete.keys import edit_texts, keys_at_site, kl_items_for, outputs_at_site
from kdel.delete.memit.hparams import MemitHparams
from kdel.delete.objectives import EDITING_OBJECTIVES, get_objective
from kdel.delete.values import optimise_value


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
    objectives = EDITING_OBJECTIVES

    def layers_of(self, ctx: EditContext, request: DeletionRequest) -> list[int]:
        center = request.layer if request.layer is not None else ctx.adapter.n_layers // 2
        return layer_window(center, self.hparams.n_layers, ctx.adapter.n_layers)

    def parameters_to_edit(self, ctx: EditContext, request: DeletionRequest) -> list[str]:
        return [ctx.adapter.mlp_out_param_name(layer) for layer in self.layers_of(ctx, request)]

    def stats(self, ctx: EditContext, layer: int) -> KeyStats:
        return method_key_statistics(ctx, self.hparams, layer)

    def solve_update(self, ctx: EditContext, layer: int, resid: torch.Tensor, K: torch.Tensor,
                     stats: KeyStats) -> tuple[torch.Tensor, dict]:
        """ΔW (d_model, d_mlp) of one layer from the residuals R (d_model, n) and keys K (d_mlp, n), float64."""
        A = self.hparams.update_weight * stats.C + K @ K.T
        X = torch.linalg.solve(A, K)  # (d_mlp, n) = (λC + K Kᵀ)⁻¹ K
        return resid @ X.T, {}

    def value_targets(self, ctx: EditContext, request: DeletionRequest, top) -> tuple[list, torch.Tensor, list[dict]]:
        """(edit texts of each fact, z (n, d_model) float64 on CPU, per-fact info)."""
        hp = self.hparams
        adapter, tok = ctx.adapter, ctx.tokenizer
        objective = get_objective(request.objective)
        noise = request.noise_settings if objective.noised else None
        texts, per_fact, z = [], [], []
        for i, fact in enumerate(request.facts):
            items = edit_texts(tok, ctx.table, fact, request.site, hp.n_prefixes, hp.n_templates, request.seed,
                               adapter, noise)
            kl_items = kl_items_for(tok, ctx.table, fact, request.site, hp.kl_prompts)
            aim = objective.aim_target(fact, request.new_targets[i] if request.new_targets else None)
            res = optimise_value(adapter, tok, top, items, objective, aim, kl_items, hp.delta_settings(),
                                 seed=request.seed + i)
            z.append(outputs_at_site(adapter, tok, top, items).mean(dim=0).cpu() + res.delta.double().cpu())
            texts.append(items)
            per_fact.append({"fact_id": fact.id, "edit_texts": len(items), "kl_prompts": len(kl_items), **res.info("z")})
        return texts, torch.stack(z), per_fact

    def edit(self, ctx: EditContext, request: DeletionRequest) -> dict:
        adapter, tok = ctx.adapter, ctx.tokenizer
        layers = self.layers_of(ctx, request)
        top = adapter.layer(layers[-1])
        stats = {layer: self.stats(ctx, layer) for layer in layers}  # on the unedited model
        texts, z, per_fact = self.value_targets(ctx, request, top)
        per_layer = []
        for j, layer in enumerate(layers):
            keys = torch.stack([keys_at_site(adapter, tok, layer, items).mean(dim=0).cpu() for items in texts])
            cur = torch.stack([outputs_at_site(adapter, tok, top, items).mean(dim=0).cpu() for items in texts])
            resid = (z - cur).T / (len(layers) - j)  # (d_model, n)
            delta_w, extra = self.solve_update(ctx, layer, resid, keys.T, stats[layer])
            adapter.add_to_mlp_out(layer, delta_w)
            per_layer.append({"layer": layer, "residual_norm": float(resid.norm()),
                              "delta_w_norm": float(delta_w.norm()), **stats[layer].info(), **extra})
        return {"layers": layers, **self.update_info(), "per_layer": per_layer, "facts": per_fact}

    def update_info(self) -> dict:
        return {"update_weight": self.hparams.update_weight}
