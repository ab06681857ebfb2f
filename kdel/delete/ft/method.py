"""`ft`: constrained fine-tuning of one MLP layer or a window (Zhu et al. 2020; Hase et al.'s FT-1 / FT-5).

Adam minimises the objective's loss (`objective_loss`: p(o) itself for erase) on every training prompt of
the fact(s); after every step each edited tensor is projected onto the L∞ ball around its original value,
exactly: |W − W0| <= bound holds elementwise in float64 arithmetic on the stored values (rounding of
W0 + clamp(...) is corrected by stepping the offending elements one ulp towards W0).
"""

from __future__ import annotations

import torch

from kdel.delete.base import DeletionMethod, DeletionRequest, EditContext, register_method
from kdel.delete.ft.hparams import FTHparams
from kdel.delete.ga.common import forget_pairs
from kdel.delete.ga.loop import (
    Pairs,
    RetainTerm,
    erase_margin,
    recall_margin,
    run_gradient_edit,
    sequence_logprob,
)
from kdel.delete.objectives import REWRITING, objective_loss
from kdel.delete.retain import select_retain_facts, unrelated_pool_of


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
class ConstrainedFineTuning(DeletionMethod):
    name = "ft"
    hparams_class = FTHparams
    objectives = ("erase", "replace", "unknown", "error_injection", "amplify")

    def _layers(self, ctx: EditContext, request: DeletionRequest) -> list[int]:
        n = ctx.adapter.n_layers
        centre = n // 2 if request.layer is None else ctx.adapter._check_layer(request.layer)
        w = min(self.hparams.window, n)
        start = max(0, min(centre - (w - 1) // 2, n - w))
        return list(range(start, start + w))

    def layers_of(self, ctx: EditContext, request: DeletionRequest) -> list[int]:
        return self._layers(ctx, request)

    def parameters_to_edit(self, ctx: EditContext, request: DeletionRequest) -> list[str]:
        layers = self._layers(ctx, request)
        if self.hparams.modules == "mlp_out":
            return [ctx.adapter.mlp_out_param_name(i) for i in layers]
        prefixes = tuple(ctx.adapter.arch.mlp.format(i) + "." for i in layers)
        return [n for n, _ in ctx.model.named_parameters() if n.startswith(prefixes)]

    def edit(self, ctx: EditContext, request: DeletionRequest) -> dict:
        hp = self.hparams
        names = self.parameters_to_edit(ctx, request)
        params = [ctx.model.get_parameter(n) for n in names]
        originals = [p.detach().clone() for p in params]
        forget = forget_pairs(ctx, request)
        rewriting = request.objective in REWRITING
        new_pairs = None
        if rewriting:
            targets = request.new_targets or []
            if len(targets) != len(request.facts):
                raise ValueError(f"objective {request.objective} needs one new target per fact")
            prompts, news = [], []
            for f, t in zip(request.facts, targets):
                prompts += list(f.prompts)
                news += [t] * len(f.prompts)
            new_pairs = Pairs.build(ctx.tokenizer, prompts, news)
        scored = new_pairs if rewriting else forget
        objective = request.objective

        def loss(lps):
            lp = sequence_logprob(lps, scored)
            return objective_loss(objective, lp, lp) if rewriting else objective_loss(objective, lp)

        if objective == "erase":
            margin_fn = lambda lps: erase_margin(lps, scored)  # noqa: E731
        elif rewriting:
            margin_fn = lambda lps: recall_margin(lps, scored)  # noqa: E731
        else:
            margin_fn = None

        retain, retain_ids = None, []
        if hp.kl_weight > 0:
            facts = select_retain_facts(ctx.table, request.facts, hp.retain_size, request.seed, unrelated_pool_of(ctx))
            if facts:
                pairs = Pairs.build(ctx.tokenizer, [p for f in facts for p in f.prompts],
                                    [f.target for f in facts for _ in f.prompts])
                retain, retain_ids = RetainTerm("kl", pairs, hp.kl_weight), [f.id for f in facts]

        def project():
            for p, p0 in zip(params, originals):
                project_linf(p, p0, hp.linf_bound)

        result = run_gradient_edit(
            ctx.model, params, scored, loss, margin_fn, hp.margin, hp.lr, hp.steps,
            retain=retain, early_stop=hp.early_stop, project=project,
        )
        info = result.to_json()
        with torch.no_grad():
            info["max_abs_delta"] = max(float((p.double() - p0.double()).abs().max()) for p, p0 in zip(params, originals))
        info.update(layers=self._layers(ctx, request), prompts=len(scored), retain_fact_ids=retain_ids)
        return info
