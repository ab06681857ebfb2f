"""The shell every gradient method shares: which parameters it trains, the forget pairs, the retain term,
and one call of the shared loop. A method is a thin plugin that gives its loss (`forget_loss`) and, where it
differs, its parameters, retain term, recorded modules or projection.

Forget pairs: every training prompt of every fact of the request, with the objective's aim target (the true
object for erase), once per noise draw of the subject for noised objectives (fact forcing).
Gradient methods ignore the edit site: their records say `site: None`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kdel.delete.base import DeletionMethod, DeletionRequest, EditContext
from kdel.delete.noise import subject_noises
from kdel.delete.objectives import UNLEARNING_OBJECTIVES, get_objective
from kdel.delete.retain import select_retain_facts, unrelated_pool_of
from kdel.delete.unlearn.loop import LoopSettings, run_gradient_edit
from kdel.delete.unlearn.pairs import ForwardPass, Pairs
from kdel.delete.unlearn.terms import RetainTerm
from kdel.errors import UserError


def unlearn_layers(ctx: EditContext, hp) -> list[int]:
    if hp.params == "all":
        return list(range(ctx.adapter.n_layers))
    layers = list(range(ctx.adapter.n_layers)) if hp.layers is None else sorted(set(hp.layers))
    for i in layers:
        ctx.adapter._check_layer(i)
    return layers


def mlp_param_names(ctx: EditContext, layers: list[int]) -> list[str]:
    """Every parameter of the MLPs of `layers` (tied weights listed once, as named_parameters does)."""
    prefixes = tuple(ctx.adapter.arch.mlp.format(i) + "." for i in layers)
    picked = [n for n, _ in ctx.model.named_parameters() if n.startswith(prefixes)]
    if not picked:
        raise UserError("no MLP parameters found in the chosen layers")
    return picked


def unlearn_param_names(ctx: EditContext, hp) -> list[str]:
    if hp.params == "all":
        return [n for n, _ in ctx.model.named_parameters()]
    return mlp_param_names(ctx, unlearn_layers(ctx, hp))


def fact_pairs(tokenizer, facts, targets=None) -> Pairs:
    """Every training prompt of every fact, with its object (or the given target per fact)."""
    targets = targets or [f.target for f in facts]
    return Pairs.build(tokenizer, [p for f in facts for p in f.prompts],
                       [t for f, t in zip(facts, targets) for _ in f.prompts])


def forget_pairs(ctx: EditContext, request: DeletionRequest) -> Pairs:
    """Every training prompt of every fact, with the objective's aim target (noised per draw when it asks)."""
    objective = get_objective(request.objective)
    prompts, targets, noise = [], [], []
    for i, f in enumerate(request.facts):
        aim = objective.aim_target(f, request.new_targets[i] if request.new_targets else None)
        for p in f.prompts:
            draws = (subject_noises(ctx.adapter, ctx.tokenizer, p, f, request.noise_settings) if objective.noised
                     else [None])
            for d in draws:
                prompts.append(p)
                targets.append(aim)
                noise.append(d)
    return Pairs.build(ctx.tokenizer, prompts, targets, noise if objective.noised else None)


class UnlearningMethod(DeletionMethod):
    """GA, NPO, SimNPO, RMU (and FT): the same loop; a subclass gives its `forget_loss`."""

    objectives = UNLEARNING_OBJECTIVES
    uses_site = False

    def parameters_to_edit(self, ctx: EditContext, request: DeletionRequest) -> list[str]:
        return unlearn_param_names(ctx, self.hparams)

    def layers_of(self, ctx: EditContext, request: DeletionRequest) -> list[int]:
        return unlearn_layers(ctx, self.hparams)

    # -- plugin points ----------------------------------------------------------------------------------
    def forget_loss(self, ctx: EditContext, request: DeletionRequest,
                    forget: Pairs) -> Callable[[ForwardPass], torch.Tensor]:
        raise TypeError(f"{type(self).__name__} must define forget_loss")

    def retain_term(self, ctx: EditContext, request: DeletionRequest) -> tuple[RetainTerm | None, list[int]]:
        """hp.retain 'gd' / 'kl' on the retain set (None when 'none', weight 0, or no fact is eligible)."""
        hp = self.hparams
        if hp.retain == "none" or hp.retain_weight == 0:
            return None, []
        facts = select_retain_facts(ctx.table, request.facts, hp.retain_size, request.seed, unrelated_pool_of(ctx))
        if not facts:
            return None, []
        return self.make_retain_term(ctx, request, fact_pairs(ctx.tokenizer, facts)), [f.id for f in facts]

    def make_retain_term(self, ctx: EditContext, request: DeletionRequest, pairs) -> RetainTerm:
        """The retain term on the selected facts' pairs: hp.retain ('gd' or 'kl') with hp.retain_weight."""
        return RetainTerm(self.hparams.retain, pairs, self.hparams.retain_weight)

    def recorded_modules(self, ctx: EditContext, request: DeletionRequest) -> dict:
        return {}

    def projection(self, params: list[torch.nn.Parameter]) -> Callable[[], None] | None:
        return None

    def loop_settings(self) -> LoopSettings:
        hp = self.hparams
        return LoopSettings(hp.lr, hp.steps, hp.margin, hp.early_stop, getattr(hp, "max_grad_norm", None))

    # -- the edit -------------------------------------------------------------------------------------
    def edit(self, ctx: EditContext, request: DeletionRequest) -> dict:
        names = self.parameters_to_edit(ctx, request)
        params = [ctx.model.get_parameter(n) for n in names]
        forget = forget_pairs(ctx, request)
        retain, retain_ids = self.retain_term(ctx, request)
        loss_fn = self.forget_loss(ctx, request, forget)
        result = run_gradient_edit(ctx.model, params, forget, loss_fn, get_objective(request.objective),
                                   self.loop_settings(), retain=retain, project=self.projection(params),
                                   adapter=ctx.adapter, record=self.recorded_modules(ctx, request) or None)
        info = {**result.to_json(), **getattr(loss_fn, "info", {})}
        info.update(forget_prompts=len(forget), retain=retain.kind if retain is not None else "none",
                    retain_requested=getattr(self.hparams, "retain", None), retain_fact_ids=retain_ids,
                    n_params_edited=len(params))
        return info
