"""Hyperparameters shared by the gradient unlearning methods (GA, NPO, SimNPO, RMU extend them), and the
validation helpers every gradient method uses. Defaults tuned for the `tiny` preset (docs/methods.md)."""

from __future__ import annotations

from dataclasses import dataclass

from kdel.errors import UserError

RETAIN_KINDS = ("none", "gd", "kl")
PARAM_SETS = ("mlp", "all")


def check_positive(method: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UserError(f"{method}: {name} must be > 0, got {value!r}")


def check_non_negative(method: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise UserError(f"{method}: {name} must be >= 0, got {value!r}")


def check_steps(method: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{method}: steps must be an integer >= 1, got {value!r}")


@dataclass
class UnlearnHparams:
    """Gradient unlearning on the fact's training prompts, early-stopped once the fact is erased."""

    lr: float = 1e-3  # Adam learning rate
    steps: int = 50  # cap on optimiser steps
    params: str = "mlp"  # "mlp": every MLP weight/bias of `layers`; "all": every parameter of the model
    layers: list[int] | None = None  # layers whose MLP is edited (params="mlp"); None = every layer
    retain: str = "none"  # "none" | "gd" (NLL on the retain set) | "kl" (KL to the original model on it)
    retain_weight: float = 1.0
    retain_size: int = 32  # facts in the retain set (outside the case's probe groups)
    margin: float = 1.0  # erase is met when o is beaten by this much log-probability on every prompt
    early_stop: bool = True
    max_grad_norm: float | None = None  # gradient clipping (None = off)

    method_name = "ga"
    retain_kinds = RETAIN_KINDS

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        m = self.method_name
        check_positive(m, "lr", self.lr)
        check_steps(m, self.steps)
        if self.params not in PARAM_SETS:
            raise UserError(f"{m}: params must be one of {', '.join(PARAM_SETS)}, got {self.params!r}")
        if self.layers is not None:
            if not isinstance(self.layers, (list, tuple)) or not self.layers:
                raise UserError(f"{m}: layers must be a non-empty list of layer indices or null, got {self.layers!r}")
            if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in self.layers):
                raise UserError(f"{m}: layers must be non-negative integers, got {self.layers!r}")
        if self.retain not in self.retain_kinds:
            raise UserError(f"{m}: retain must be one of {', '.join(self.retain_kinds)}, got {self.retain!r}")
        check_non_negative(m, "retain_weight", self.retain_weight)
        if isinstance(self.retain_size, bool) or not isinstance(self.retain_size, int) or self.retain_size < 0:
            raise UserError(f"{m}: retain_size must be an integer >= 0, got {self.retain_size!r}")
        check_positive(m, "margin", self.margin)
        if self.max_grad_norm is not None:
            check_positive(m, "max_grad_norm", self.max_grad_norm)
