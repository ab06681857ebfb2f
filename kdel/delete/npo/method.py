"""`npo`: negative preference optimisation (Zhang et al. 2024).

Forget loss per (prompt, object) pair: (2/β)·log(1 + (π/π_ref)^β) = (2/β)·softplus(β·(log π − log π_ref)),
π = p(o | prompt) under the model being edited, π_ref = the same under the original model (computed once
before editing). Its gradient is GA's weighted by 2·σ(β·(log π − log π_ref)), which vanishes as π falls
below π_ref: NPO slows down by itself where GA runs away. Same retain terms and early stop as `ga`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdel.delete.base import DeletionMethod, DeletionRequest, EditContext, register_method
from kdel.delete.ga.common import run_unlearning, unlearn_layers, unlearn_param_names
from kdel.delete.ga.hparams import UnlearnHparams, check_positive
from kdel.delete.ga.loop import sequence_logprob, target_token_logprobs


@dataclass
class NPOHparams(UnlearnHparams):
    beta: float = 0.1  # inverse temperature of the preference loss (the NPO paper's default)

    method_name = "npo"

    def validate(self) -> None:
        super().validate()
        check_positive("npo", "beta", self.beta)


@register_method
class NPO(DeletionMethod):
    name = "npo"
    hparams_class = NPOHparams
    objectives = ("erase",)

    def __init__(self, hparams=None):
        super().__init__(hparams)
        self.hparams.validate()

    def parameters_to_edit(self, ctx: EditContext, request: DeletionRequest) -> list[str]:
        return unlearn_param_names(ctx, self.hparams)

    def layers_of(self, ctx: EditContext, request: DeletionRequest) -> list[int]:
        return unlearn_layers(ctx, self.hparams)

    def edit(self, ctx: EditContext, request: DeletionRequest) -> dict:
        beta = self.hparams.beta

        def factory(forget, model):
            with torch.no_grad():
                ref = sequence_logprob(target_token_logprobs(model, forget), forget).detach()

            def loss(lps):
                ratio = sequence_logprob(lps, forget) - ref
                return (2.0 / beta) * F.softplus(beta * ratio).mean()

            return loss

        return run_unlearning(ctx, request, self.hparams, factory)
