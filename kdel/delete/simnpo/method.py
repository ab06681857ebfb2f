"""`simnpo`: simple negative preference optimisation (Fan et al. 2024, "Simplicity Prevails").

NPO without the reference model, with a length-normalised log-likelihood and a reward margin. Forget loss per
(prompt, object) pair, with |y| the object's number of tokens:
    −(2/β)·log σ(−(β/|y|)·log π(y | x) − γ) = (2/β)·softplus((β/|y|)·log π(y | x) + γ).
Its gradient is GA's on the length-normalised log-likelihood, weighted by σ((β/|y|)·log π + γ), which vanishes
as π falls: like NPO it slows down by itself, but the weight depends on the fact's own likelihood, not on its
ratio to a reference model (the "reference model bias" SimNPO removes). Same retain terms and early stop as
`ga` and `npo`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from kdel.delete.base import register_method
from kdel.delete.unlearn.hparams import UnlearnHparams, check_non_negative, check_positive
from kdel.delete.unlearn.method import UnlearningMethod


@dataclass
class SimNPOHparams(UnlearnHparams):
    beta: float = 2.5  # inverse temperature (the paper's TOFU forget05 setting)
    gamma: float = 0.0  # reward margin γ (the paper uses 0 on TOFU)

    method_name = "simnpo"

    def validate(self) -> None:
        super().validate()
        check_positive("simnpo", "beta", self.beta)
        check_non_negative("simnpo", "gamma", self.gamma)


@register_method
class SimNPO(UnlearningMethod):
    name = "simnpo"
    hparams_class = SimNPOHparams

    def forget_loss(self, ctx, request, forget):
        beta, gamma = self.hparams.beta, self.hparams.gamma

        def loss(fp):
            reward = beta * fp.logprob / fp.lengths + gamma
            return (2.0 / beta) * F.softplus(reward).mean()

        return loss
