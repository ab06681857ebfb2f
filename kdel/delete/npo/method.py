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

from kdel.delete.base import register_method
from kdel.delete.unlearn.hparams import UnlearnHparams, check_positive
from kdel.delete.unlearn.method import UnlearningMethod


@dataclass
class NPOHparams(UnlearnHparams):
    beta: float = 0.1  # inverse temperature of the preference loss (the NPO paper's default)

    method_name = "npo"

    def validate(self) -> None:
        super().validate()
        check_positive("npo", "beta", self.beta)


@register_method
class NPO(UnlearningMethod):
    name = "npo"
    hparams_class = NPOHparams

    def forget_loss(self, ctx, request, forget):
        beta = self.hparams.beta
        with torch.no_grad():
            ref = forget.forward(ctx.model, ctx.adapter).logprob.detach()  # π_ref: before editing

        def loss(fp):
            ratio = fp.logprob - ref
            return (2.0 / beta) * F.softplus(beta * ratio).mean()

        return loss
