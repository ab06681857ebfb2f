"""The metrics of one case from two score tables: the base model's (once per run) and the edited model's
(one batched pass per case). Pure functions of numbers: no model, no files.

`CaseScores` pairs rows of the base scores with the rows of the after-edit pass; each step below turns
pairs into one section of the case record (groups, global, kl, efficacy, hase).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kdel.audit.evaluate import (
    WRECK_THRESHOLD,
    BaseScores,
    _clean,
    _mean,
    erasure_score,
    group_metrics,
    kl_divergence,
    neighborhood_score,
    rewrite_score,
)
from kdel.audit.schema import (EfficacyRecord, FluencyRecord, GlobalRecord, GroupRecord, HaseRecord, KLRecord,
                               ProbeOutcomes)
from kdel.models.scoring import TargetScores

HASE_NEIGHBORHOOD_GROUPS = ("same_object", "same_relation")  # CounterFact-like: same relation or same object


@dataclass
class CaseScores:
    """Scores of one case: base rows (indices into base.rows) -> after-edit rows (positions in `after`)."""

    base: BaseScores
    after: TargetScores  # the after-edit pass over `union` rows, then the new target's rows
    dists: dict[int, torch.Tensor]  # after-edit next-token log-distributions by position in `after`
    pos: dict[int, int]  # base row -> position in `after`
    n_union: int
    new_before: TargetScores | None  # the new target's rows scored before the edit (rewriting objectives)

    def pair(self, base_rows) -> tuple[TargetScores, TargetScores]:
        idx = np.array([self.pos[r] for r in base_rows], dtype=np.int64)
        return self.base.scores.subset(np.array(base_rows, dtype=np.int64)), self.after.subset(idx)

    def new_pair(self, start: int, stop: int) -> tuple[TargetScores, TargetScores] | None:
        """Rows [start, stop) of the new target's prompts, before and after (None without a new target)."""
        if self.new_before is None:
            return None
        sel = np.arange(start, stop)
        return self.new_before.subset(sel), self.after.subset(sel + self.n_union)


def union_rows(base: BaseScores, fact_id: int) -> tuple[list[int], dict[int, int]]:
    """The base rows one case scores after its edit: every fact's canonical prompt (global accuracy and the
    probe groups), then the target's other training prompts and its held-out prompts."""
    union = list(base.rows.canonical)
    pos = {r: i for i, r in enumerate(union)}
    for r in base.rows.train[fact_id] + base.rows.para[fact_id]:
        if r not in pos:
            pos[r] = len(union)
            union.append(r)
    return union, pos


def group_sections(cs: CaseScores, fact_id: int, groups: dict[str, list[int]]) -> dict[str, GroupRecord]:
    rows = cs.base.rows
    out = {}
    for name, members in groups.items():
        if name == "target":
            base_rows = rows.train[fact_id]
        elif name == "paraphrase":
            base_rows = rows.para[fact_id] if members else []
        else:
            base_rows = [rows.canonical[i] for i in members]
        out[name] = GroupRecord(**group_metrics(*cs.pair(base_rows)))
    return out


def global_section(cs: CaseScores, deleted: set[int]) -> GlobalRecord:
    gb, ga = cs.pair(cs.base.rows.canonical)
    keep = np.array([i not in deleted for i in range(len(gb))])
    flips = gb.recalled & ~ga.recalled & keep
    elig = gb.recalled & keep
    acc_before, acc_after = _mean(gb.recalled), _mean(ga.recalled)
    return GlobalRecord(
        n=len(gb), acc_before=acc_before, acc_after=acc_after,
        acc_drop=None if acc_before is None else acc_before - acc_after,
        n_flipped_excluding_target=int(flips.sum()), flip_rate_excluding_target=_mean(flips[elig]),
        mean_p_drop_excluding_target=_mean((gb.prob - ga.prob)[elig]),
    )


def probe_outcomes(cs: CaseScores, deleted: set[int]) -> ProbeOutcomes:
    """Each other fact recalled before the edit (canonical prompt): p(o) before and after (6 significant
    digits: labels, not inputs to other metrics), recalled after."""
    gb, ga = cs.pair(cs.base.rows.canonical)
    ids = [i for i in range(len(gb)) if i not in deleted and bool(gb.recalled[i])]
    return ProbeOutcomes(fact_ids=ids, p_before=[float(f"{gb.prob[i]:.6g}") for i in ids],
                         p_after=[float(f"{ga.prob[i]:.6g}") for i in ids],
                         recalled_after=[bool(ga.recalled[i]) for i in ids])


def kl_section(cs: CaseScores, unrelated: list[int]) -> KLRecord:
    canon = cs.base.rows.canonical
    kls = [kl_divergence(cs.base.dists[canon[i]], cs.dists[cs.pos[canon[i]]]) for i in unrelated]
    return KLRecord(n=len(kls), mean=_mean(kls), max=float(max(kls)) if kls else None)


def _success_each(objective: str, before: TargetScores, after: TargetScores,
                  new_after: TargetScores | None) -> np.ndarray:
    from kdel.delete.objectives import succeeded

    return np.array([
        succeeded(objective, bool(after.recalled[i]), bool(new_after.recalled[i]) if new_after is not None else None,
                  float(before.prob[i]), float(after.prob[i]))
        for i in range(len(after))
    ], dtype=bool)


@dataclass
class TargetPairs:
    """The target's training and held-out prompts (and the new target's), before and after."""

    train: tuple[TargetScores, TargetScores]
    para: tuple[TargetScores, TargetScores]
    new_train: tuple[TargetScores, TargetScores] | None
    new_para: tuple[TargetScores, TargetScores] | None

    @classmethod
    def of(cls, cs: CaseScores, fact_id: int) -> TargetPairs:
        rows = cs.base.rows
        n_train, n_para = len(rows.train[fact_id]), len(rows.para[fact_id])
        return cls(cs.pair(rows.train[fact_id]), cs.pair(rows.para[fact_id]), cs.new_pair(0, n_train),
                   cs.new_pair(n_train, n_train + n_para))


def efficacy_section(objective: str, new_target: str | None, tp: TargetPairs) -> EfficacyRecord:
    """Efficacy on the canonical prompt (the one the edit is computed for) and on every phrasing."""
    (tb, ta), (pb, pa) = tp.train, tp.para
    new = tp.new_train
    success_each = _success_each(objective, tb, ta, new[1] if new else None)
    para_success = (_success_each(objective, pb, pa, tp.new_para[1] if tp.new_para else None) if len(pb)
                    else np.zeros(0, bool))
    return EfficacyRecord(
        objective=objective,
        success=bool(success_each[0]),
        target_prompts_success_rate=_mean(success_each),
        target_recall_after=_mean(ta.recalled),
        target_recall_before=_mean(tb.recalled),
        target_p_before=float(tb.prob[0]),
        target_p_after=float(ta.prob[0]),
        target_logprob_after=float(ta.logprob[0]),
        target_rank_after=int(ta.first_token_rank[0]),
        target_first_token_recalled_after=bool(ta.first_token_recalled[0]),
        paraphrase_recall_before=_mean(pb.recalled),
        paraphrase_recall_after=_mean(pa.recalled),
        paraphrase_success_rate=_mean(para_success),
        new_target=new_target if new else None,
        new_target_recall_after=bool(new[1].recalled[0]) if new else None,
        new_target_p_before=float(new[0].prob[0]) if new else None,
        new_target_p_after=float(new[1].prob[0]) if new else None,
    )


def hase_section(objective: str, tp: TargetPairs, cs: CaseScores, groups: dict[str, list[int]],
                 tracing_effect: float | None) -> HaseRecord:
    """Hase et al.'s scores: erasure score for erase, rewrite score for objectives that raise a probability."""
    raising = objective != "erase"
    if raising and tp.new_train is not None:
        (pre, post), (ppre, ppost) = (tp.new_train[0].prob, tp.new_train[1].prob), \
            (tp.new_para[0].prob, tp.new_para[1].prob)
    else:
        (pre, post), (ppre, ppost) = (tp.train[0].prob, tp.train[1].prob), (tp.para[0].prob, tp.para[1].prob)
    score = rewrite_score if raising else erasure_score
    neigh = [cs.base.rows.canonical[i] for g in HASE_NEIGHBORHOOD_GROUPS for i in groups.get(g, [])]
    if neigh:
        hb, ha = cs.pair(neigh)
        neigh_score = _mean(neighborhood_score(hb.prob, ha.prob))
    else:
        neigh_score = None
    return HaseRecord(
        kind="rewrite" if raising else "erasure",
        efficacy_score=_clean(float(score(pre[:1], post[:1])[0])),
        paraphrase_score=_clean(_mean(score(ppre, ppost))) if len(ppre) else None,
        neighborhood_score=neigh_score,
        neighborhood_groups=list(HASE_NEIGHBORHOOD_GROUPS),
        tracing_effect=tracing_effect,
    )


FLUENCY_TEXTS = 3  # generations after the edit kept in the case file


class FluencyAfter:
    """What one fluency measurement after an edit gives: the comparison and the generations."""

    def __init__(self, row: dict, texts: list[str], config):
        self.row, self.texts, self.config = row, texts, config


class CaseFluencyCheck:
    """kdel.models.fluency.FluencyCheck, keeping the generations after the edit too."""

    def __init__(self, check):
        self.check = check

    def after(self, model) -> FluencyAfter:
        from kdel.models.fluency import compare_fluency, measure_fluency

        c = self.check
        score = measure_fluency(model, c.tokenizer, c.prompts, c.heldout, c.config)
        return FluencyAfter(compare_fluency(c.before, score, c.config), score.texts[:FLUENCY_TEXTS], c.config)


def fluency_check(model, tok, table) -> CaseFluencyCheck:
    """The fluency baseline of the unedited model on the table's corpus (held-out lines for perplexity, the
    corpus' lines for toy-vocabulary prompts): measured once per executor, before any edit."""
    from kdel.delete.corpus import corpus_of
    from kdel.models.fluency import FluencyCheck, FluencyConfig

    corpus = corpus_of(table)
    return CaseFluencyCheck(FluencyCheck(model, tok, corpus.heldout_lines(), FluencyConfig(),
                                         prompt_lines=list(corpus.lines)))


def _finite(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def fluency_section(f: FluencyAfter) -> FluencyRecord:
    r = f.row
    return FluencyRecord(
        entropy_before=_finite(r["fluency_before_entropy"]), entropy_after=_finite(r["fluency_after_entropy"]),
        entropy_drop=_finite(r["fluency_entropy_drop"]),
        perplexity_before=_finite(r["fluency_before_perplexity"]),
        perplexity_after=_finite(r["fluency_after_perplexity"]),
        perplexity_ratio=_finite(r["fluency_ppl_ratio"]),
        perplexity_tokens=int(r["fluency_after_perplexity_tokens"]),
        wrecked=bool(r["fluency_wrecked"]), wrecked_by=list(r["fluency_wrecked_by"]),
        max_ppl_ratio=float(f.config.max_ppl_ratio), max_entropy_drop=float(f.config.max_entropy_drop),
        texts_after=list(f.texts),
    )


def wrecked_verdict(groups: dict[str, GroupRecord], fluency: FluencyRecord | None) -> tuple[bool, list[str]]:
    """(wrecked, what fired): "unrelated_accuracy" (§12's collateral bound), then the fluency flags."""
    fired = ["unrelated_accuracy"] if wrecked(groups) else []
    if fluency is not None and fluency.wrecked:
        fired += fluency.wrecked_by
    return bool(fired), fired


def wrecked(groups: dict[str, GroupRecord]) -> bool:
    """§12's collateral bound: the unrelated facts recalled before fell below WRECK_THRESHOLD accuracy."""
    unrel = groups.get("unrelated")
    return bool(unrel is not None and unrel.acc_after_recalled is not None
                and unrel.acc_after_recalled < WRECK_THRESHOLD)
