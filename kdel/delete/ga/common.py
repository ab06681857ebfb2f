"""What GA and NPO share: which parameters they edit, the forget pairs, the retain term, the record info."""

from __future__ import annotations

from kdel.delete.base import DeletionMethod, DeletionRequest, EditContext
from kdel.delete.ga.hparams import UnlearnHparams
from kdel.delete.ga.loop import Pairs, RetainTerm, erase_margin, run_gradient_edit, target_token_logprobs
from kdel.delete.retain import select_retain_facts, unrelated_pool_of
from kdel.errors import UserError


def unlearn_layers(ctx: EditContext, hp: UnlearnHparams) -> list[int]:
    if hp.params == "all":
        return list(range(ctx.adapter.n_layers))
    layers = list(range(ctx.adapter.n_layers)) if hp.layers is None else sorted(set(hp.layers))
    for i in layers:
        ctx.adapter._check_layer(i)
    return layers


def unlearn_param_names(ctx: EditContext, hp: UnlearnHparams) -> list[str]:
    """Every parameter GA/NPO may change (tied weights listed once, as named_parameters does)."""
    names = [n for n, _ in ctx.model.named_parameters()]
    if hp.params == "all":
        return names
    prefixes = tuple(ctx.adapter.arch.mlp.format(i) + "." for i in unlearn_layers(ctx, hp))
    picked = [n for n in names if n.startswith(prefixes)]
    if not picked:
        raise UserError("no MLP parameters found in the chosen layers")
    return picked


def forget_pairs(ctx: EditContext, request: DeletionRequest) -> Pairs:
    """Every training prompt of every deleted fact, with its true object."""
    prompts, targets = [], []
    for f in request.facts:
        for p in f.prompts:
            prompts.append(p)
            targets.append(f.target)
    return Pairs.build(ctx.tokenizer, prompts, targets)


def retain_term(ctx: EditContext, request: DeletionRequest, hp: UnlearnHparams) -> tuple[RetainTerm | None, list[int]]:
    """The retain penalty (None when hp.retain == 'none' or no fact is eligible) and the retain fact ids."""
    if hp.retain == "none" or hp.retain_weight == 0:
        return None, []
    facts = select_retain_facts(ctx.table, request.facts, hp.retain_size, request.seed, unrelated_pool_of(ctx))
    if not facts:
        return None, []
    prompts = [p for f in facts for p in f.prompts]
    targets = [f.target for f in facts for _ in f.prompts]
    return RetainTerm(hp.retain, Pairs.build(ctx.tokenizer, prompts, targets), hp.retain_weight), [f.id for f in facts]


def run_unlearning(ctx: EditContext, request: DeletionRequest, hp: UnlearnHparams, forget_loss_factory) -> dict:
    """Run the shared loop with `forget_loss_factory(forget_pairs, model) -> (token_lps -> loss)`."""
    params = [ctx.model.get_parameter(n) for n in unlearn_param_names(ctx, hp)]
    forget = forget_pairs(ctx, request)
    retain, retain_ids = retain_term(ctx, request, hp)
    loss_fn = forget_loss_factory(forget, ctx.model)
    result = run_gradient_edit(
        ctx.model,
        params,
        forget,
        loss_fn,
        lambda lps: erase_margin(lps, forget),
        hp.margin,
        hp.lr,
        hp.steps,
        retain=retain,
        early_stop=hp.early_stop,
        max_grad_norm=hp.max_grad_norm,
    )
    info = result.to_json()
    info.update(
        forget_prompts=len(forget),
        retain=hp.retain if retain is not None else "none",
        retain_requested=hp.retain,
        retain_fact_ids=retain_ids,
        n_params_edited=len(params),
    )
    return info


__all__ = ["forget_pairs", "retain_term", "run_unlearning", "target_token_logprobs", "unlearn_layers", "unlearn_param_names"]


class UnlearningMethod(DeletionMethod):
    """GA and NPO: the same parameters, forget pairs, retain term and early-stopped loop; a subclass gives
    only its forget loss, `forget_loss(forget_pairs, model) -> (token log-probs -> loss)`."""

    objectives = ("erase",)

    def parameters_to_edit(self, ctx: EditContext, request: DeletionRequest) -> list[str]:
        return unlearn_param_names(ctx, self.hparams)

    def layers_of(self, ctx: EditContext, request: DeletionRequest) -> list[int]:
        return unlearn_layers(ctx, self.hparams)

    def forget_loss(self, forget: Pairs, model):
        raise TypeError(f"{type(self).__name__} must define forget_loss")

    def edit(self, ctx: EditContext, request: DeletionRequest) -> dict:
        return run_unlearning(ctx, request, self.hparams, self.forget_loss)
