"""Deletion methods behind one interface (base.py) and a registry; one sub-package per method.

Shared pieces: objectives.py (what an edit aims for: loss, stopping test, success), targets.py (new targets
of rewriting objectives), efficacy.py (did the objective hold on the edited weights), keys.py / values.py
(k* and v* of the locate-then-edit methods), unlearn/ (the loop of the gradient methods), noise.py (the
noised subject of fact forcing and tracing reversal)."""

from kdel.delete.base import (
    DeletionMethod,
    DeletionRequest,
    EditContext,
    EditHandle,
    EditRecord,
    apply_deletion,
    get_method,
    list_methods,
    model_state_hash,
    register_method,
)
from kdel.delete.efficacy import EfficacyProbe, FactEfficacy
from kdel.delete.objectives import OBJECTIVES, Objective, get_objective

__all__ = [
    "OBJECTIVES",
    "DeletionMethod",
    "DeletionRequest",
    "EditContext",
    "EditHandle",
    "EditRecord",
    "EfficacyProbe",
    "FactEfficacy",
    "Objective",
    "apply_deletion",
    "get_method",
    "get_objective",
    "list_methods",
    "model_state_hash",
    "register_method",
]
