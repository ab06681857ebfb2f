"""`rmu`: representation misdirection for unlearning (Li et al. 2024, the WMDP benchmark).

On the forget texts (each training prompt of the fact followed by its object), the hidden state h_ℓ (the
residual stream after block ℓ) is pushed toward a fixed random direction scaled by a coefficient c:
    forget loss = mean over positions and dimensions of (h_ℓ − c·u)²,  u = a seeded uniform-[0,1) vector, unit norm;
while on the retain texts (the retain set of kdel.delete.retain) h_ℓ is held at the frozen model's:
    retain loss = α · mean (h_ℓ − h_ℓ^frozen)²   (RetainTerm "act").
Only the MLP weights of a few layers train (the reference: the MLP output projection of layers ℓ−2..ℓ).
On the shared loop, early-stopped once the object is no longer recalled on every training prompt.

kdel departures, for facts instead of documents: the forget loss is taken by default at the positions that
predict the object (`positions: answer`: the last prompt token and the object's tokens but the last) rather
than at every token (`positions: all`, the reference), since the subject's tokens are shared with every other
fact of the subject; and c is by default relative to the frozen model's mean ‖h_ℓ‖ on those positions
(`steering_scale`), since an absolute c (the reference's 6.5 for Zephyr-7B) does not transfer across models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdel.delete.base import DeletionRequest, EditContext, register_method
from kdel.delete.unlearn.hparams import check_non_negative, check_positive, check_steps
from kdel.delete.unlearn.method import UnlearningMethod, mlp_param_names
from kdel.delete.unlearn.terms import RetainTerm
from kdel.errors import UserError

POSITIONS = ("answer", "all")
MODULES = ("mlp_out", "mlp")


@dataclass
class RMUHparams:
    lr: float = 1e-3  # Adam (the reference: AdamW 5e-5 on a 7B model)
    steps: int = 100  # cap on optimiser steps (the reference: 150 batches)
    layer: int | None = None  # ℓ when the request gives none (None: n_layers // 2)
    n_train_layers: int = 3  # the MLPs of layers ℓ−n+1..ℓ train (the reference: 3)
    modules: str = "mlp_out"  # "mlp_out": the MLP output projection (the reference); "mlp": every MLP weight
    steering_coef: float | None = None  # c, absolute (the reference: 6.5); None = steering_scale · mean ‖h_ℓ‖
    steering_scale: float = 2.0
    positions: str = "answer"  # where the forget loss acts: "answer" or "all" (every token, the reference)
    retain: str = "act"  # "act": hold h_ℓ on the retain set at the frozen model's; "none"
    retain_weight: float = 100.0  # α (the reference: 1200)
    retain_size: int = 32
    margin: float = 1.0  # erase is met when o is beaten by this much log-probability on every prompt
    early_stop: bool = True
    max_grad_norm: float | None = None

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        check_positive("rmu", "lr", self.lr)
        check_steps("rmu", self.steps)
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0):
            raise UserError(f"rmu: layer must be an integer >= 0 or null, got {self.layer!r}")
        if isinstance(self.n_train_layers, bool) or not isinstance(self.n_train_layers, int) or self.n_train_layers < 1:
            raise UserError(f"rmu: n_train_layers must be an integer >= 1, got {self.n_train_layers!r}")
        if self.modules not in MODULES:
            raise UserError(f"rmu: modules must be one of {', '.join(MODULES)}, got {self.modules!r}")
        if self.steering_coef is not None:
            check_positive("rmu", "steering_coef", self.steering_coef)
        check_positive("rmu", "steering_scale", self.steering_scale)
        if self.positions not in POSITIONS:
            raise UserError(f"rmu: positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}")
        if self.retain not in ("act", "none"):
            raise UserError(f"rmu: retain must be act or none, got {self.retain!r}")
        check_non_negative("rmu", "retain_weight", self.retain_weight)
        if isinstance(self.retain_size, bool) or not isinstance(self.retain_size, int) or self.retain_size < 0:
            raise UserError(f"rmu: retain_size must be an integer >= 0, got {self.retain_size!r}")
        check_positive("rmu", "margin", self.margin)
        if self.max_grad_norm is not None:
            check_positive("rmu", "max_grad_norm", self.max_grad_norm)


def steering_direction(d_model: int, seed: int) -> torch.Tensor:
    """u: a seeded vector of uniform [0, 1) entries, scaled to unit norm (float32, CPU)."""
    u = torch.rand(d_model, generator=torch.Generator().manual_seed(int(seed)))
    return u / u.norm()


@register_method
class RMU(UnlearningMethod):
    name = "rmu"
    hparams_class = RMUHparams

    def hidden_layer(self, ctx: EditContext, request: DeletionRequest) -> int:
        layer = request.layer if request.layer is not None else self.hparams.layer
        return ctx.adapter._check_layer(ctx.adapter.n_layers // 2 if layer is None else layer)

    def layers_of(self, ctx: EditContext, request: DeletionRequest) -> list[int]:
        top = self.hidden_layer(ctx, request)
        return list(range(max(0, top - self.hparams.n_train_layers + 1), top + 1))

    def parameters_to_edit(self, ctx: EditContext, request: DeletionRequest) -> list[str]:
        layers = self.layers_of(ctx, request)
        if self.hparams.modules == "mlp_out":
            return [ctx.adapter.mlp_out_param_name(i) for i in layers]
        return mlp_param_names(ctx, layers)

    def recorded_modules(self, ctx: EditContext, request: DeletionRequest) -> dict:
        return {"h": ctx.adapter.layer(self.hidden_layer(ctx, request))}

    def forget_loss(self, ctx, request, forget):
        hp = self.hparams
        rows, pos = forget.positions(hp.positions, ctx.adapter.device)
        record = self.recorded_modules(ctx, request)
        with torch.no_grad():
            h0 = forget.forward(ctx.model, ctx.adapter, record).hidden["h"][rows, pos].float()
        mean_norm = float(h0.norm(dim=-1).mean())
        coef = hp.steering_coef if hp.steering_coef is not None else hp.steering_scale * mean_norm
        target = coef * steering_direction(h0.shape[-1], request.seed).to(h0.device)

        def loss(fp):
            return ((fp.hidden["h"][rows, pos].float() - target) ** 2).mean()

        loss.info = {"rmu_layer": self.hidden_layer(ctx, request), "steering_coef": coef,
                     "forget_hidden_norm": mean_norm, "forget_positions": int(len(rows))}
        return loss

    def make_retain_term(self, ctx, request, pairs):
        """RMU keeps the retain prompts' hidden state at its layer (the 'act' term), whatever hp.retain names."""
        module = ctx.adapter.layer(self.hidden_layer(ctx, request))
        return RetainTerm("act", pairs, self.hparams.retain_weight, module)
