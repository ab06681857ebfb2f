"""Efficacy, defined once: did the objective hold on the edited weights? (DESIGN §6, §12)

Always measured on the model with the weight update applied (never under an optimisation hook), with
whole-object recall under teacher forcing. For each fact of a request, the objective's `success` test
(kdel.delete.objectives) is applied to its aim target — o, or the new target — on:
- the canonical prompt (prompts[0]): `success`, the number every report uses;
- every training prompt: `prompts_success_rate`.
Objectives with a noised subject (fact_forcing) are scored on `NoiseSettings.samples` fresh noise draws of
each prompt (seed + EVAL_SEED_OFFSET, never the optimisation's): a prompt succeeds when at least half of its
draws do, and p is the mean over the draws.

Use: `probe = EfficacyProbe(ctx, request, new_targets)`; `before = probe.score()`; edit; `after = probe.score()`;
`probe.outcomes(before, after)`. `apply_deletion` does exactly this and stores the outcomes in
`EditRecord.efficacy`; `probe.true_p` / `probe.new_p` give the record's clean canonical p(o) and p(new target).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from kdel.delete.noise import NoiseSettings, RowNoise, score_rows, subject_noises
from kdel.delete.objectives import get_objective
from kdel.models.scoring import _pad_id, encode_prompt_target, forward_scores


@dataclass
class RowScores:
    logprob: np.ndarray
    recalled: np.ndarray

    @property
    def prob(self) -> np.ndarray:
        return np.exp(self.logprob)

    def take(self, idx) -> RowScores:
        idx = np.asarray(idx, dtype=np.int64)
        return RowScores(self.logprob[idx], self.recalled[idx])


@dataclass
class FactEfficacy:
    fact_id: int
    objective: str
    aim_target: str  # the target whose probability the objective moves
    success: bool  # on the canonical prompt
    prompts_success_rate: float  # over every training prompt
    aim_p_before: float  # canonical prompt (mean over noise draws when noised)
    aim_p_after: float
    aim_recalled_after: bool  # canonical prompt (at least half of the noise draws when noised)
    noised: bool
    n_prompts: int

    def to_json(self) -> dict:
        return asdict(self)


class EfficacyProbe:
    """The rows that decide a request's efficacy, scored in one call per model state."""

    def __init__(self, ctx, request, new_targets: Sequence[str] | None = None, noise: NoiseSettings | None = None):
        self.ctx = ctx
        self.facts = list(request.facts)
        self.objective = get_objective(request.objective)
        self.new_targets = list(new_targets) if new_targets else None
        self.noise = (noise or NoiseSettings(seed=request.seed)).for_evaluation()
        tok = ctx.tokenizer
        self.rows, self.row_noise, self.row_fact, self.row_prompt = [], [], [], []
        self.aims = []
        for i, fact in enumerate(self.facts):
            aim = self.objective.aim_target(fact, self.new_targets[i] if self.new_targets else None)
            self.aims.append(aim)
            for j, prompt in enumerate(fact.prompts):
                enc = encode_prompt_target(tok, prompt, aim)
                noises = (subject_noises(ctx.adapter, tok, prompt, fact, self.noise) if self.objective.noised
                          else [None])
                for n in noises:
                    self._add(enc, n, i, j)
        self.n_aim = len(self.rows)
        self.true_rows = [self._add(encode_prompt_target(tok, f.prompt, f.target), None, i, 0)
                          for i, f in enumerate(self.facts)]
        self.new_rows = ([self._add(encode_prompt_target(tok, f.prompt, t), None, i, 0)
                          for i, (f, t) in enumerate(zip(self.facts, self.new_targets))] if self.new_targets else [])

    def _add(self, enc, noise: RowNoise | None, fact_index: int, prompt_index: int) -> int:
        self.rows.append(enc)
        self.row_noise.append(noise)
        self.row_fact.append(fact_index)
        self.row_prompt.append(prompt_index)
        return len(self.rows) - 1

    def score(self) -> RowScores:
        """Scores of every row on the model as it is now."""
        ctx = self.ctx
        pad = _pad_id(ctx.tokenizer)
        logprob = np.zeros(len(self.rows))
        recalled = np.zeros(len(self.rows), dtype=bool)
        clean = [r for r, n in enumerate(self.row_noise) if n is None]
        noisy = [r for r, n in enumerate(self.row_noise) if n is not None]
        if clean:
            s = forward_scores(ctx.model, [self.rows[r] for r in clean], pad)[0]
            logprob[clean], recalled[clean] = s.logprob, s.recalled
        if noisy:
            lp, rec = score_rows(ctx.model, ctx.adapter, [self.rows[r] for r in noisy],
                                 [self.row_noise[r] for r in noisy], pad)
            logprob[noisy], recalled[noisy] = lp, rec
        return RowScores(logprob, recalled)

    def true_p(self, scores: RowScores) -> list[float]:
        return [float(p) for p in scores.take(self.true_rows).prob]

    def new_p(self, scores: RowScores) -> list[float] | None:
        return [float(p) for p in scores.take(self.new_rows).prob] if self.new_rows else None

    def outcomes(self, before: RowScores, after: RowScores) -> list[FactEfficacy]:
        aim = np.arange(self.n_aim)
        ok = self.objective.success(before.take(aim), after.take(aim))
        fact_of = np.asarray(self.row_fact[: self.n_aim])
        prompt_of = np.asarray(self.row_prompt[: self.n_aim])
        out = []
        for i, fact in enumerate(self.facts):
            mine = fact_of == i
            per_prompt = [ok[mine & (prompt_of == j)].mean() >= 0.5 for j in range(len(fact.prompts))]
            canon = np.flatnonzero(mine & (prompt_of == 0))
            out.append(FactEfficacy(
                fact_id=fact.id,
                objective=self.objective.name,
                aim_target=self.aims[i],
                success=bool(per_prompt[0]),
                prompts_success_rate=float(np.mean(per_prompt)),
                aim_p_before=float(before.prob[canon].mean()),
                aim_p_after=float(after.prob[canon].mean()),
                aim_recalled_after=bool(after.recalled[canon].mean() >= 0.5),
                noised=self.objective.noised,
                n_prompts=len(fact.prompts),
            ))
        return out
