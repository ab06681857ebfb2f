"""Deletion objectives (DESIGN §6, §12): what an edit aims for, its loss and its success test.

- erase: lower p(o | s, r) until o is no longer recalled (Hase et al.'s fact erasure). Gradient methods
  minimise p(o) itself, not the NLL of o (unbounded below, it overshoots).
- replace: rewrite o to another entity (given, or drawn at random with the seed): the counterfactual edit.
- unknown: rewrite o to the reserved answer token `<unknown>` present in the toy vocabulary.
- error_injection: Hase et al.'s name for a counterfactual rewrite to a random other entity (= replace).
- amplify: Hase et al.'s fact amplification, raise p(o).
(Hase et al.'s fact forcing and tracing reversal need a corrupted-subject setup and are not offered yet.)
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from kdel.errors import UserError
from kdel.facts import Fact, FactTable
from kdel.models.scoring import Encoded
from kdel.models.tokenizer import UNKNOWN_ANSWER

OBJECTIVES = ("erase", "replace", "unknown", "error_injection", "amplify")
REWRITING = ("replace", "unknown", "error_injection")  # objectives that have a new target


def check_objective(name: str) -> str:
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r}: choose from {', '.join(OBJECTIVES)}")
    return name


def new_targets_for(
    objective: str, facts: Sequence[Fact], table: FactTable, given: Sequence[str] | None = None, seed: int = 0
) -> list[str] | None:
    """The new target of each fact for rewriting objectives (None for erase/amplify).

    `given` (replace only): one target for all facts or one per fact; must differ from the true object.
    """
    check_objective(objective)
    if objective not in REWRITING:
        if given:
            raise UserError(f"objective {objective!r} takes no new target (--target is for replace)")
        return None
    if objective == "unknown":
        return [UNKNOWN_ANSWER] * len(facts)
    if given:
        targets = list(given) * len(facts) if len(given) == 1 else list(given)
        if len(targets) != len(facts):
            raise UserError(f"{len(given)} new targets given for {len(facts)} facts")
        for f, t in zip(facts, targets):
            if t == f.target:
                raise UserError(f"replace target {t!r} is the fact's own object: pick another entity")
        return targets
    rng = random.Random(seed)
    pool = table.entity_names
    out = []
    for f in facts:
        choices = [n for n in pool if n != f.target and n != f.subject]
        if not choices:
            raise UserError("no other entity to replace the object with")
        out.append(rng.choice(choices))
    return out


def target_logprobs(model, encoded: Sequence[Encoded], pad_id: int = 0) -> torch.Tensor:
    """Differentiable log p(target | prompt) (sum over target tokens) of each pair: shape (n,)."""
    device = next(model.parameters()).device
    width = max(len(p) + len(t) for p, t in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for row, (p, t) in enumerate(encoded):
        seq = torch.tensor(p + t, device=device)
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    logits = model(input_ids=ids, attention_mask=mask).logits
    out = []
    for row, (p, t) in enumerate(encoded):
        pos = torch.arange(len(p) - 1, len(p) + len(t) - 1, device=device)
        lp = torch.log_softmax(logits[row, pos].float(), dim=-1)
        out.append(lp.gather(1, torch.tensor(t, device=device)[:, None]).sum())
    return torch.stack(out)


def objective_loss(objective: str, true_logprob: torch.Tensor, new_logprob: torch.Tensor | None = None) -> torch.Tensor:
    """The loss a gradient method minimises for `objective` (mean over the batch of prompts)."""
    if objective == "erase":
        return true_logprob.exp().mean()  # p(o) itself (Hase et al.)
    if objective == "amplify":
        return -true_logprob.mean()
    if objective in REWRITING:
        if new_logprob is None:
            raise ValueError(f"objective {objective} needs the new target's log-probabilities")
        return -new_logprob.mean()
    raise UserError(f"unknown objective {objective!r}")


def succeeded(objective: str, true_recalled_after: bool, new_recalled_after: bool | None = None,
              p_before: float | None = None, p_after: float | None = None) -> bool:
    """Efficacy per objective: erase -> o not recalled; rewrites -> the new target recalled; amplify -> p(o) up."""
    if objective == "erase":
        return not true_recalled_after
    if objective in REWRITING:
        return bool(new_recalled_after)
    if objective == "amplify":
        return p_before is not None and p_after is not None and p_after > p_before and true_recalled_after
    raise UserError(f"unknown objective {objective!r}")
