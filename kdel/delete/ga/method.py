"""`ga`: gradient ascent on the fact's training prompts (Jang et al. 2023), with an optional retain term
('gd' = gradient difference, 'kl' = KL to the original model on retain prompts), early-stopped as soon as
the object is no longer recalled with a log-probability margin on every training prompt."""

from __future__ import annotations

from kdel.delete.base import DeletionMethod, DeletionRequest, EditContext, register_method
from kdel.delete.ga.common import run_unlearning, unlearn_layers, unlearn_param_names
from kdel.delete.ga.hparams import GAHparams
from kdel.delete.ga.loop import sequence_logprob


@register_method
class GradientAscent(DeletionMethod):
    name = "ga"
    hparams_class = GAHparams
    objectives = ("erase",)

    def __init__(self, hparams=None):
        super().__init__(hparams)
        self.hparams.validate()

    def parameters_to_edit(self, ctx: EditContext, request: DeletionRequest) -> list[str]:
        return unlearn_param_names(ctx, self.hparams)

    def layers_of(self, ctx: EditContext, request: DeletionRequest) -> list[int]:
        return unlearn_layers(ctx, self.hparams)

    def edit(self, ctx: EditContext, request: DeletionRequest) -> dict:
        hp = self.hparams

        def factory(forget, model):
            def loss(lps):
                lp = sequence_logprob(lps, forget)
                # 'nll': minimise log p(o) = ascend the NLL; 'prob': minimise p(o) itself.
                return lp.mean() if hp.forget_loss == "nll" else lp.exp().mean()

            return loss

        return run_unlearning(ctx, request, hp, factory)
