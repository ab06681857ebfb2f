"""r-ROME (Gupta et al. 2024, arXiv 2403.07175): ROME with one consistent, averaged key (registered as 'r-rome').

ROME's update uses the averaged key k_avg in C⁻¹k but the bare prompt's key in the denominator, so the
update is exact for a key it did not optimise for and can blow up ("disabling edits"). r-ROME uses k_avg
everywhere: v* = W k_avg + b + δ and ΔW = (v* − W k_avg − b)(C⁻¹k_avg)ᵀ / (k_avgᵀ C⁻¹ k_avg), exact for k_avg.
(We take v* as the mean MLP output over the edit texts plus δ, δ being the shift optimised on all of them.)
"""

from kdel.delete.base import register_method
from kdel.delete.rome import Rome, RomeHparams


@register_method
class RRome(Rome):
    name = "r-rome"
    hparams_class = RomeHparams
    exact_for = "averaged"


__all__ = ["RRome"]
