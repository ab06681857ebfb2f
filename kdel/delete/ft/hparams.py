"""Hyperparameters of constrained fine-tuning. Defaults tuned for the `tiny` preset (docs/methods.md, "ft")."""

from __future__ import annotations

from dataclasses import dataclass

from kdel.delete.unlearn.hparams import check_non_negative, check_positive, check_steps
from kdel.errors import UserError

MODULES = ("mlp_out", "mlp")


@dataclass
class FTHparams:
    lr: float = 1e-3  # Adam learning rate
    steps: int = 50  # cap on optimiser steps
    linf_bound: float = 3e-2  # calibrated on the tiny preset; |W - W0| <= bound elementwise, after every step (Hase et al.: 1e-4 on GPT-J)
    window: int = 1  # layers edited, centred on request.layer (1 = FT-1, 5 = FT-5)
    modules: str = "mlp_out"  # "mlp_out": the MLP output matrix only; "mlp": every MLP weight and bias
    kl_weight: float = 0.0  # optional KL(p_ref || p) on retain facts' prompts (0 = off)
    retain_size: int = 32  # retain facts for the KL term (outside the case's probe groups)
    margin: float = 1.0  # objective met with this log-probability margin on every training prompt
    early_stop: bool = True

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        check_positive("ft", "lr", self.lr)
        check_steps("ft", self.steps)
        check_positive("ft", "linf_bound", self.linf_bound)
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise UserError(f"ft: window must be an integer >= 1, got {self.window!r}")
        if self.modules not in MODULES:
            raise UserError(f"ft: modules must be one of {', '.join(MODULES)}, got {self.modules!r}")
        check_non_negative("ft", "kl_weight", self.kl_weight)
        if isinstance(self.retain_size, bool) or not isinstance(self.retain_size, int) or self.retain_size < 0:
            raise UserError(f"ft: retain_size must be an integer >= 0, got {self.retain_size!r}")
        check_positive("ft", "margin", self.margin)
