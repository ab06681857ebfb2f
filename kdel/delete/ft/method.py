"""`ft`: constrained fine-tuning of one MLP layer or a window (Zhu et al. 2020; Hase et al.'s FT-1 / FT-5).

A plugin of the shared loop (kdel.delete.unlearn): Adam minimises the objective's own loss (p(o) itself for
erase; the NLL of the aim target for the objectives that raise one) on every training prompt of the fact(s)
(under the noised subject for fact forcing); after every step each edited tensor is projected onto the L∞
ball around its original value, exactly: |W − W0| <= bound holds elementwise in float64 arithmetic on the
stored values (rounding of W0 + clamp(...) is corrected by stepping the offending elements one ulp towards W0).
"""

from __future__ import annotations

import torch

from kdel.delete.base import DeletionRequest, EditContext, register_method
from kdel.delete.ft.hparams import FTHparams
from kdel.delete.objectives import EDITING_OBJECTIVES, get_objective
from kdel.delete.retain import select_retain_facts, unrelated_pool_of
from kdel.delete.unlearn.method import UnlearningMethod, fact_pairs, mlp_param_names
from kdel.delete.unlearn.terms import RetainTerm


@torch.no_grad()
def project_linf(w: torch.Tensor, w0: torch.Tensor, bound: float) -> None:
    """In place: w <- w0 + clamp(w - w0, -bound, bound), with |w - w0| <= bound exact in float64.

    The clamped value is formed in float64 and rounded to w's dtype; where that rounding crossed the
    bound, the element steps one ulp back towards w0 (rounding is within half an ulp, so one step suffices).
    """
    w0d = w0.double()
    new = (w0d + (w.double() - w0d).clamp(-bound, bound)).to(w.dtype)
    over = (new.double() - w0d).abs() > bound
    if over.any():
        new = torch.where(over, torch.nextafter(new, w0.to(w.dtype)), new)
    w.copy_(new)


@register_method
class ConstrainedFineTuning(UnlearningMethod):
    name = "ft"
    hparams_class = FTHparams
    objectives = EDITING_OBJECTIVES

    def layers_of(self, ctx: EditContext, request: DeletionRequest) -> list[int]:
        n = ctx.adapter.n_layers
        centre = n // 2 if request.layer is None else ctx.adapter._check_layer(request.layer)
        w = min(self.hparams.window, n)
        start = max(0, min(centre - (w - 1) // 2, n - w))
        return list(range(start, start + w))

    def parameters_to_edit(self, ctx: EditContext, request: DeletionRequest) -> list[str]:
        layers = self.layers_of(ctx, request)
        if self.hparams.modules == "mlp_out":
            return [ctx.adapter.mlp_out_param_name(i) for i in layers]
        return mlp_param_names(ctx, layers)

    def forget_loss(self, ctx, request, forget):
        objective = get_objective(request.objective)
        return lambda fp: objective.loss(fp.logprob)

    def retain_term(self, ctx, request):
        hp = self.hparams
        if hp.kl_weight <= 0:
            return None, []
        facts = select_retain_facts(ctx.table, request.facts, hp.retain_size, request.seed, unrelated_pool_of(ctx))
        if not facts:
            return None, []
        return RetainTerm("kl", fact_pairs(ctx.tokenizer, facts), hp.kl_weight), [f.id for f in facts]

    def projection(self, params):
        originals = [p.detach().clone() for p in params]
        bound = self.hparams.linf_bound

        def project():
            for p, p0 in zip(params, originals):
                project_linf(p, p0, bound)

        return project

    def edit(self, ctx: EditContext, request: DeletionRequest) -> dict:
        names = self.parameters_to_edit(ctx, request)
        before = [ctx.model.get_parameter(n).detach().clone() for n in names]
        info = super().edit(ctx, request)
        with torch.no_grad():
            info["max_abs_delta"] = max(float((ctx.model.get_parameter(n).double() - b.double()).abs().max())
                                        for n, b in zip(names, before))
        info.update(layers=self.layers_of(ctx, request), prompts=info["forget_prompts"])
        return info
