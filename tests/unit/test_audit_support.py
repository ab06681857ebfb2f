"""Tiny deletion methods for the audit's tests (no tests here). toy-ablate: ablate the MLP hidden units most active
at the edit site, i.e. scale those rows of the MLP output matrix; toy-slow: the same, waiting `sleep_s` per edit.
Importing this module registers both."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdel.delete import DeletionMethod, register_method


@dataclass
class ToyHparams:
    k: int = 24  # hidden units ablated
    factor: float = 0.0  # their rows of the MLP output matrix are multiplied by this


@register_method
class ToyAblate(DeletionMethod):
    name = "toy-ablate"
    hparams_class = ToyHparams
    objectives = ("erase",)

    def _layer(self, ctx, request) -> int:
        return ctx.adapter.n_layers // 2 if request.layer is None else request.layer

    def layers_of(self, ctx, request):
        return [self._layer(ctx, request)]

    def parameters_to_edit(self, ctx, request):
        return [ctx.adapter.mlp_out_param_name(self._layer(ctx, request))]

    @torch.no_grad()
    def edit(self, ctx, request):
        from kdel.models.positions import site_position

        layer = self._layer(ctx, request)
        fact = request.facts[0]
        pos = site_position(ctx.tokenizer, fact.prompt, fact.subject, request.site)
        seen = {}
        hook = ctx.adapter.mlp_out(layer).register_forward_pre_hook(lambda m, a: seen.setdefault("k", a[0].detach()))
        try:
            ids = torch.tensor([ctx.tokenizer(fact.prompt)["input_ids"]], device=ctx.device)
            ctx.model(input_ids=ids)
        finally:
            hook.remove()
        act = seen["k"][0, pos]
        top = torch.topk(act, min(self.hparams.k, act.numel())).indices
        w = ctx.adapter.mlp_out_weight(layer)
        w[:, top] *= self.hparams.factor
        return {"units": sorted(int(i) for i in top)}


@dataclass
class ToySlowHparams(ToyHparams):
    sleep_s: float = 0.5  # seconds each edit waits, so a test can act while a run is in the middle of its cases


@register_method
class ToySlow(ToyAblate):
    """toy-ablate that takes `sleep_s` per edit (for kill, lock and Ray tests)."""

    name = "toy-slow"
    hparams_class = ToySlowHparams

    def edit(self, ctx, request):
        import time

        time.sleep(self.hparams.sleep_s)
        return super().edit(ctx, request)
