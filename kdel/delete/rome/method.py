"""ROME (Meng et al. 2022): a rank-one update of one layer's MLP output matrix W (v = W k + b).

For a fact, with edit texts (its training prompts, bare and after corpus prefixes, see kdel.delete.keys):
  k_avg  = mean key over the edit texts at the edit site;  k_bare = key of the canonical bare prompt;
  δ      = optimised (kdel.delete.values) so that adding it to the MLP output at the site meets the objective;
  u      = C⁻¹ k_avg (the update's input direction; C = E[k kᵀ] over the training corpus).
ROME (as the reference code): exact for k_bare,
  v* = W k_bare + b + δ,   ΔW = (v* − W k_bare − b) uᵀ / (k_bareᵀ u) = (δ / k_bareᵀu) uᵀ
— the averaged key in u but the bare key in the denominator, the asymmetry r-ROME removes.
Several facts in one request are edited one after another (keys recomputed after each update).
Under a noised subject (fact forcing) the keys and δ are those of the noised edit texts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdel.delete.base import DeletionMethod, DeletionRequest, EditContext, register_method
from kdel.delete.covariance import KeyStats, method_key_statistics
from kdel.delete.keys import edit_texts, fact_keys, key_direction, kl_items_for
from kdel.delete.objectives import EDITING_OBJECTIVES, get_objective
from kdel.delete.rome.hparams import RomeHparams
from kdel.delete.values import optimise_value


@dataclass
class RankOneUpdate:
    """ΔW = column rowᵀ (outer(column, row)), (d_model, d_mlp): maps `key` to `v_star` exactly (in float64)."""

    layer: int
    column: torch.Tensor  # (v* − W key − b) / denominator, (d_model,): the output direction
    row: torch.Tensor  # u = C⁻¹ k_avg, (d_mlp,): the input direction
    key: torch.Tensor  # the key the update is exact for, (d_mlp,)
    v_star: torch.Tensor  # (d_model,)
    denominator: float  # keyᵀ u
    info: dict

    def matrix(self) -> torch.Tensor:
        return torch.outer(self.column, self.row)


def default_layer(ctx: EditContext, request: DeletionRequest) -> int:
    """The request's layer, else the middle layer."""
    return request.layer if request.layer is not None else ctx.adapter.n_layers // 2


def mlp_out_affine(adapter, layer: int, key: torch.Tensor) -> torch.Tensor:
    """W k + b of layer's MLP output projection, float64."""
    w = adapter.mlp_out_weight(layer).detach().double()
    out = w @ key.to(w.device)
    bias = getattr(adapter.mlp_out(layer), "bias", None)
    if bias is not None:
        out = out + bias.detach().double()
    return out


@register_method
class Rome(DeletionMethod):
    name = "rome"
    hparams_class = RomeHparams
    objectives = EDITING_OBJECTIVES
    exact_for = "bare"  # which key the update is exact for: 'bare' (ROME) or 'averaged' (r-ROME)

    def parameters_to_edit(self, ctx: EditContext, request: DeletionRequest) -> list[str]:
        return [ctx.adapter.mlp_out_param_name(default_layer(ctx, request))]

    def layers_of(self, ctx: EditContext, request: DeletionRequest) -> list[int]:
        return [default_layer(ctx, request)]

    def stats(self, ctx: EditContext, layer: int) -> KeyStats:
        return method_key_statistics(ctx, self.hparams, layer)

    def compute_update(self, ctx: EditContext, request: DeletionRequest, index: int, stats: KeyStats) -> RankOneUpdate:
        """The rank-one update for `request.facts[index]` on the model as it is now."""
        hp = self.hparams
        fact = request.facts[index]
        layer = default_layer(ctx, request)
        adapter, tok = ctx.adapter, ctx.tokenizer
        objective = get_objective(request.objective)
        noise = request.noise_settings if objective.noised else None
        items = edit_texts(tok, ctx.table, fact, request.site, hp.n_prefixes, hp.n_templates, request.seed,
                           adapter, noise)
        kl_items = kl_items_for(tok, ctx.table, fact, request.site, hp.kl_prompts)
        aim = objective.aim_target(fact, request.new_targets[index] if request.new_targets else None)
        res = optimise_value(adapter, tok, adapter.mlp_out(layer), items, objective, aim, kl_items,
                             hp.delta_settings(), seed=request.seed + index)
        k_avg, k_bare = fact_keys(adapter, tok, layer, items)
        key = k_bare if self.exact_for == "bare" else k_avg
        u = key_direction(stats.C, k_avg)
        denominator = float(key @ u)
        delta = res.delta.double().cpu()
        v_star = mlp_out_affine(adapter, layer, key).cpu() + delta
        column = delta / denominator  # = (v* − W key − b) / keyᵀu
        info = {
            "fact_id": fact.id,
            "layer": layer,
            "edit_texts": len(items),
            "kl_prompts": len(kl_items),
            "denominator": denominator,
            "key_cosine_bare_avg": float(torch.nn.functional.cosine_similarity(k_bare, k_avg, dim=0)),
            **res.info(),
        }
        return RankOneUpdate(layer, column, u, key, v_star, denominator, info)

    def edit(self, ctx: EditContext, request: DeletionRequest) -> dict:
        layer = default_layer(ctx, request)
        stats = self.stats(ctx, layer)
        per_fact = []
        for i in range(len(request.facts)):
            upd = self.compute_update(ctx, request, i, stats)
            ctx.adapter.add_to_mlp_out(layer, upd.matrix())
            per_fact.append(upd.info | {"delta_w_norm": float(upd.matrix().norm())})
        return {"exact_for": self.exact_for, **stats.info(), "facts": per_fact}
