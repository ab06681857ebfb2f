"""`ga`: gradient ascent on the fact's training prompts (Jang et al. 2023), with an optional retain term
('gd' = gradient difference, 'kl' = KL to the original model on retain prompts), early-stopped as soon as
the object is no longer recalled with a log-probability margin on every training prompt."""

from __future__ import annotations

from kdel.delete.base import register_method
from kdel.delete.ga.hparams import GAHparams
from kdel.delete.unlearn.method import UnlearningMethod


@register_method
class GradientAscent(UnlearningMethod):
    name = "ga"
    hparams_class = GAHparams

    def forget_loss(self, ctx, request, forget):
        nll = self.hparams.forget_loss == "nll"

        def loss(fp):
            lp = fp.logprob
            # 'nll': minimise log p(o) = ascend the NLL; 'prob': minimise p(o) itself.
            return lp.mean() if nll else lp.exp().mean()

        return loss
