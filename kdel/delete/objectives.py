"""Deletion objectives (DESIGN §6, §12): what an edit aims for, its loss, its stopping test and its success test.

Every objective is one `Objective` object, and every method asks it the same four questions, so no method
branches on the objective's name:
- `aim_target(fact, new_target)`: the target whose probability the objective moves (the true object o, or
  a new target);
- `loss(log p(aim))`: what a gradient-based optimisation minimises (mean over its texts);
- `margins(leads)` / `met(leads, margin)`: the stopping test, read off per-token leads
  (log p(aim token) − max log p(other token)) of each text;
- `success(before, after)`: efficacy on the edited weights (kdel.delete.efficacy applies it).

The objectives (Hase et al. 2023's five editing problems, plus kdel's erase variants):
- erase: lower p(o) until o is no longer recalled (whole-object top-1), with a log-probability margin
  (Hase et al.'s fact erasure). Gradient methods minimise p(o) itself, not the NLL of o (unbounded below).
- replace: rewrite o to another object (given, or drawn with the seed among the objects of the same relation).
- error_injection: Hase et al.'s name for the counterfactual rewrite (same as replace).
- unknown: rewrite o to the reserved answer token `<unknown>` of the toy vocabulary.
- amplify: Hase et al.'s fact amplification: raise p(o) (no stopping test: it runs every step).
- tracing_reversal: Hase et al.'s tracing reversal: rewrite o to what the model predicts when the subject's
  token embeddings are noised (ROME's gn corruption), i.e. make the clean prompt behave like the corrupted one.
- fact_forcing: Hase et al.'s fact forcing: raise p(o) *under* the noised subject: the optimisation sees the
  noised-subject input, and success is measured on it (with fresh noise samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kdel.delete.targets import choose_new_targets
from kdel.errors import UserError


@dataclass(frozen=True)
class Objective:
    name: str
    summary: str
    aim: str  # "true": the fact's object o; "new": a new target
    direction: str  # "lower" or "raise" p(aim)
    new_target: str | None = None  # how the new target is chosen: "replace", "unknown", "corrupted" (None: no new target)
    noised: bool = False  # optimised and judged with the subject's token embeddings noised
    stops: bool = True  # has a stopping test (amplify has none: it runs every step)

    @property
    def rewrites(self) -> bool:
        return self.aim == "new"

    def aim_target(self, fact, new_target: str | None) -> str:
        if self.aim == "true":
            return fact.target
        if new_target is None:
            raise ValueError(f"objective {self.name} needs a new target for fact {fact.id}")
        return new_target

    def loss(self, aim_logprob: torch.Tensor) -> torch.Tensor:
        """lower: mean p(aim) (Hase et al.: p itself, not the NLL); raise: mean NLL of the aim."""
        if self.direction == "lower":
            return aim_logprob.exp().mean()
        return -aim_logprob.mean()

    def margins(self, leads: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per text, how far the aim holds (>= 0 holds): lower: the largest amount by which some aim token is
        beaten; raise: the smallest lead of an aim token over its best rival."""
        if self.direction == "lower":
            return torch.stack([(-lead).max() for lead in leads])
        return torch.stack([lead.min() for lead in leads])

    def met(self, leads: Sequence[torch.Tensor], margin: float) -> bool:
        """The stopping test: the aim holds with `margin` on every text (never, for objectives without one)."""
        if not self.stops or not len(leads):
            return False
        return bool((self.margins(leads) >= margin).all())

    def success(self, before, after) -> np.ndarray:
        """Per scored row of the aim target (`TargetScores` before and after the edit): did the objective hold?
        lower: the aim is no longer recalled; rewrite: the new target is recalled; raise p(o) (amplify, fact
        forcing): o is recalled and its probability went up."""
        if self.direction == "lower":
            return ~np.asarray(after.recalled, dtype=bool)
        if self.rewrites:
            return np.asarray(after.recalled, dtype=bool)
        return np.asarray(after.recalled, dtype=bool) & (np.asarray(after.logprob) > np.asarray(before.logprob))


_OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("erase", "lower p(o) until o is no longer recalled", "true", "lower"),
        Objective("replace", "rewrite o to another object of the same relation", "new", "raise", "replace"),
        Objective("unknown", "rewrite o to the reserved <unknown> answer", "new", "raise", "unknown"),
        Objective("error_injection", "Hase et al.'s counterfactual rewrite (= replace)", "new", "raise", "replace"),
        Objective("amplify", "raise p(o)", "true", "raise", stops=False),
        Objective("tracing_reversal", "rewrite o to the noised-subject model's prediction", "new", "raise",
                  "corrupted"),
        Objective("fact_forcing", "raise p(o) under a noised subject", "true", "raise", noised=True),
    )
}

OBJECTIVES: tuple[str, ...] = tuple(_OBJECTIVES)
REWRITING: tuple[str, ...] = tuple(n for n, o in _OBJECTIVES.items() if o.rewrites)  # objectives with a new target
# What the locate-then-edit methods and FT support (all of them); unlearning methods support erase only.
EDITING_OBJECTIVES: tuple[str, ...] = OBJECTIVES
UNLEARNING_OBJECTIVES: tuple[str, ...] = ("erase",)


def get_objective(name: str) -> Objective:
    if name not in _OBJECTIVES:
        raise UserError(f"unknown objective {name!r}: choose from {', '.join(OBJECTIVES)}")
    return _OBJECTIVES[name]


def check_objective(name: str) -> str:
    return get_objective(name).name


def objective_loss(objective: str, true_logprob: torch.Tensor, new_logprob: torch.Tensor | None = None) -> torch.Tensor:
    """Compatibility wrapper: the loss of `objective` on the log-probabilities of its aim target."""
    obj = get_objective(objective)
    aim = new_logprob if obj.rewrites else true_logprob
    if aim is None:
        raise ValueError(f"objective {objective} needs the new target's log-probabilities")
    return obj.loss(aim)


def succeeded(objective: str, true_recalled_after: bool, new_recalled_after: bool | None = None,
              p_before: float | None = None, p_after: float | None = None) -> bool:
    """Compatibility wrapper for one clean-prompt row (use kdel.delete.efficacy for whole facts): erase -> o not
    recalled; rewrites -> the new target recalled; amplify / fact_forcing -> o recalled and p(o) up (the caller's
    p's must be measured as the objective requires: under the noised subject for fact_forcing)."""
    obj = get_objective(objective)
    if obj.direction == "lower":
        return not true_recalled_after
    if obj.rewrites:
        return bool(new_recalled_after)
    return p_before is not None and p_after is not None and p_after > p_before and bool(true_recalled_after)


def new_targets_for(
    objective: str, facts: Sequence, table, given: Sequence[str] | None = None, seed: int = 0
) -> list[str] | None:
    """The new target of each fact for rewriting objectives (None for the others, and for tracing_reversal,
    whose target is the model's own noised-subject prediction: `apply_deletion` computes it). See
    kdel.delete.targets for the rules (replace: a seeded object of the same relation)."""
    chosen = choose_new_targets(get_objective(objective), facts, table, given, seed)
    return None if chosen is None else [t.text for t in chosen]
