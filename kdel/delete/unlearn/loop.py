"""The gradient-edit loop every gradient method shares (FT, GA, NPO, SimNPO, RMU): Adam on chosen parameters,
a method's loss on one forward pass over the forget pairs, an optional retain term, an optional projection
after each step, and early stopping as soon as the objective is met.

The stopping test is the objective's (kdel.delete.objectives), read off the same forward pass that computes
the loss (so it costs nothing) and therefore on the weights as they are (after any projection), never on a
hook: erase is met when, on every forget prompt, some token of the object is beaten by at least `margin` in
log-probability (the whole object is no longer top-1); a rewrite when every token of the new target leads by
`margin`; amplify never (it runs every step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from kdel.delete.unlearn.pairs import ForwardPass, Pairs
from kdel.delete.unlearn.terms import RetainTerm


@dataclass
class LoopResult:
    steps: int  # optimiser steps taken
    met: bool  # objective met on every forget prompt with the final weights
    first_loss: float
    last_loss: float
    final_margin: float  # the worst forget prompt's margin (the objective's `margins`) at the end

    def to_json(self) -> dict:
        return {"steps": self.steps, "met": self.met, "first_loss": self.first_loss, "last_loss": self.last_loss,
                "final_margin": self.final_margin}


@dataclass
class LoopSettings:
    lr: float
    steps: int
    margin: float
    early_stop: bool = True
    max_grad_norm: float | None = None


def run_gradient_edit(
    model,
    params: list[torch.nn.Parameter],
    forget: Pairs,
    loss_fn: Callable[[ForwardPass], torch.Tensor],
    objective,
    settings: LoopSettings,
    retain: RetainTerm | None = None,
    project: Callable[[], None] | None = None,
    adapter=None,
    record: dict | None = None,
) -> LoopResult:
    """Minimise loss_fn(pass) (+ retain.weight * retain.loss) over `params` with Adam, in place."""
    own = {id(p) for p in params}
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in own)
    was_training = model.training
    model.eval()
    opt = torch.optim.Adam(params, lr=settings.lr)
    first = last = float("nan")
    taken = 0
    margins = None
    met = False
    try:
        if retain is not None:
            retain.prepare(model)
        with torch.enable_grad():
            for step in range(settings.steps + 1):
                fp = forget.forward(model, adapter, record)
                leads = fp.leads()
                margins = objective.margins(leads)
                met = objective.met(leads, settings.margin)
                if step == settings.steps or (settings.early_stop and met):
                    break
                loss = loss_fn(fp)
                if retain is not None:
                    loss = loss + retain.weight * retain.loss(model)
                last = float(loss.detach())
                if step == 0:
                    first = last
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if settings.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                opt.step()
                if project is not None:
                    project()
                taken += 1
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])
            p.grad = None
        model.train(was_training)
    worst = float(margins.min()) if margins is not None and len(margins) else float("nan")
    return LoopResult(taken, bool(met), first, last, worst)
