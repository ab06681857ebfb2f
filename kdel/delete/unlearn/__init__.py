"""The loop every gradient method shares (FT, GA, NPO, SimNPO, RMU) and the method shell they plug into.

A package of shared machinery, not a method: nothing here is registered."""

from kdel.delete.unlearn.hparams import UnlearnHparams
from kdel.delete.unlearn.loop import LoopResult, LoopSettings, run_gradient_edit
from kdel.delete.unlearn.method import UnlearningMethod, fact_pairs, forget_pairs, unlearn_layers, unlearn_param_names
from kdel.delete.unlearn.pairs import ForwardPass, Pairs
from kdel.delete.unlearn.terms import RetainTerm

__all__ = [
    "ForwardPass",
    "LoopResult",
    "LoopSettings",
    "Pairs",
    "RetainTerm",
    "UnlearnHparams",
    "UnlearningMethod",
    "fact_pairs",
    "forget_pairs",
    "run_gradient_edit",
    "unlearn_layers",
    "unlearn_param_names",
]
