"""Hyperparameters of gradient ascent (the shared ones live in kdel.delete.unlearn.hparams)."""

from __future__ import annotations

from dataclasses import dataclass

from kdel.delete.unlearn.hparams import (  # noqa: F401 - re-exported for the old import path
    PARAM_SETS,
    RETAIN_KINDS,
    UnlearnHparams,
    check_non_negative,
    check_positive,
    check_steps,
)
from kdel.errors import UserError


@dataclass
class GAHparams(UnlearnHparams):
    """Gradient ascent (Jang et al. 2023). forget_loss 'nll' ascends the NLL of o (the classic GA);
    'prob' minimises p(o) itself (Hase et al.'s erase loss)."""

    forget_loss: str = "nll"

    def validate(self) -> None:
        super().validate()
        if self.forget_loss not in ("nll", "prob"):
            raise UserError(f"ga: forget_loss must be 'nll' or 'prob', got {self.forget_loss!r}")
