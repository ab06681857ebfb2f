"""Deletion efficacy under a collateral bound, and degradation under sequential deletion.

Measurements on the model with the weights applied (DESIGN §6), whole-object recall on the canonical
prompt (§12). For each single-fact case:
- `erased`: the edit's efficacy (kdel.delete.efficacy, the one definition: for erase, the object is no
  longer recalled on the canonical prompt); `erased_all`: it holds on every training prompt;
- `unrelated_acc`: recall after, over the case's `unrelated` probe group (members of the run's fixed
  sample at distance >= 3) that were recalled before; NaN when that group is empty;
- `others_acc`: recall after over every other fact recalled before (global accuracy without the target);
- a case counts as a success when erased and its collateral accuracy is >= 0.9 (§12's collateral bound);
  the collateral accuracy is `unrelated_acc`, or `others_acc` when the unrelated group is empty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from kdel.delete.base import DeletionMethod, DeletionRequest, EditContext, apply_deletion
from kdel.models.scoring import score_targets

COLLATERAL_BOUND = 0.9


def recall_all(ctx: EditContext, prompts_of=lambda f: [f.prompt]) -> np.ndarray:
    """Whole-object recall of every fact of the table (canonical prompt): bool array indexed by fact id."""
    facts = ctx.table.facts
    prompts, targets, owner = [], [], []
    for f in facts:
        for p in prompts_of(f):
            prompts.append(p)
            targets.append(f.target)
            owner.append(f.id)
    rec = score_targets(ctx.model, ctx.tokenizer, prompts, targets).recalled
    out = np.ones(len(facts), dtype=bool)
    for i, r in zip(owner, rec):
        out[i] &= bool(r)
    return out


@dataclass
class CaseOutcome:
    fact_id: int
    erased: bool
    erased_all: bool
    unrelated_acc: float
    unrelated_n: int
    others_acc: float
    delta_norm: float
    seconds: float
    steps: int | None
    met: bool | None

    @property
    def collateral_acc(self) -> float:
        return self.others_acc if math.isnan(self.unrelated_acc) else self.unrelated_acc

    @property
    def success(self) -> bool:
        return self.erased and self.collateral_acc >= COLLATERAL_BOUND


@dataclass
class EfficacySummary:
    method: str
    n: int
    efficacy: float  # erased with collateral accuracy >= 0.9
    raw_efficacy: float  # erased, whatever the damage
    erased_all_prompts: float
    mean_unrelated_acc: float
    min_collateral_acc: float
    mean_others_acc: float
    mean_delta_norm: float
    mean_seconds: float
    mean_steps: float

    def to_json(self) -> dict:
        return asdict(self)


def summarize(method: str, cases: Sequence[CaseOutcome]) -> EfficacySummary:
    def mean(xs):
        xs = [x for x in xs if x is not None and not math.isnan(x)]
        return float(np.mean(xs)) if xs else float("nan")

    return EfficacySummary(
        method=method,
        n=len(cases),
        efficacy=mean([c.success for c in cases]),
        raw_efficacy=mean([c.erased for c in cases]),
        erased_all_prompts=mean([c.erased_all for c in cases]),
        mean_unrelated_acc=mean([c.unrelated_acc for c in cases]),
        min_collateral_acc=min((c.collateral_acc for c in cases), default=float("nan")),
        mean_others_acc=mean([c.others_acc for c in cases]),
        mean_delta_norm=mean([c.delta_norm for c in cases]),
        mean_seconds=mean([c.seconds for c in cases]),
        mean_steps=mean([c.steps for c in cases]),
    )


def _acc(after: np.ndarray, ids: Sequence[int]) -> float:
    return float(after[list(ids)].mean()) if len(ids) else float("nan")


def evaluate_erasures(
    method: DeletionMethod,
    ctx: EditContext,
    fact_ids: Sequence[int],
    unrelated_pool: Sequence[int],
    layer: int | None = None,
    site: str = "subject_last",
    seed: int = 0,
    objective: str = "erase",
) -> list[CaseOutcome]:
    """Edit each fact alone (erase by default), measure, revert. Only facts recalled before are meaningful;
    others are skipped. `erased` is the objective's efficacy on the canonical prompt."""
    before = recall_all(ctx)
    pool = list(unrelated_pool)
    out = []
    for fid in fact_ids:
        if not before[fid]:
            continue
        fact = ctx.table.facts[fid]
        group = [i for i in ctx.table.probe_groups(fid, pool)["unrelated"] if before[i]]
        others = [i for i in range(len(before)) if i != fid and before[i]]
        request = DeletionRequest([fact], objective, layer=layer, site=site, seed=seed)
        handle, record = apply_deletion(method, ctx, request)
        try:
            after = recall_all(ctx)
            eff = record.efficacy[0]
            out.append(
                CaseOutcome(
                    fact_id=fid,
                    erased=eff.success,
                    erased_all=eff.prompts_success_rate == 1.0,
                    unrelated_acc=_acc(after, group),
                    unrelated_n=len(group),
                    others_acc=_acc(after, others),
                    delta_norm=record.total_delta_norm,
                    seconds=record.seconds,
                    steps=record.info.get("steps"),
                    met=record.info.get("met"),
                )
            )
        finally:
            handle.revert()
    return out


@dataclass
class SequentialStep:
    step: int  # number of facts deleted so far
    fact_id: int
    efficacy: float  # fraction of the facts deleted so far that are still not recalled
    global_acc: float  # recall over the facts never deleted that were recalled before
    delta_norm: float  # ||ΔW|| of this step's edit

    def to_json(self) -> dict:
        return asdict(self)


def sequential_deletion(
    method: DeletionMethod,
    ctx: EditContext,
    fact_ids: Sequence[int],
    layer: int | None = None,
    site: str = "subject_last",
    seed: int = 0,
    revert: bool = True,
) -> list[SequentialStep]:
    """Erase facts one after another without reverting; after each, efficacy so far and global accuracy.

    All edits are reverted at the end (in reverse order) unless `revert` is False.
    """
    before = recall_all(ctx)
    ids = [i for i in fact_ids if before[i]]
    handles, steps = [], []
    try:
        for k, fid in enumerate(ids, start=1):
            req = DeletionRequest([ctx.table.facts[fid]], "erase", layer=layer, site=site, seed=seed)
            handle, record = apply_deletion(method, ctx, req)
            handles.append(handle)
            after = recall_all(ctx)
            deleted = set(ids[:k])
            kept = [i for i in range(len(before)) if before[i] and i not in set(ids)]
            steps.append(
                SequentialStep(
                    step=k,
                    fact_id=fid,
                    efficacy=float(np.mean([not after[i] for i in deleted])),
                    global_acc=_acc(after, kept),
                    delta_norm=record.total_delta_norm,
                )
            )
    finally:
        if revert:
            for h in reversed(handles):
                h.revert()
    return steps
