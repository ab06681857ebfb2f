"""New targets of the rewriting objectives, with where each came from (recorded in the edit record).

- replace / error_injection: the given target, else an object of the SAME relation (another fact's object,
  different from o and from the subject), drawn with a seed per (seed, fact id) — a type-matched
  counterfactual, as CounterFact's; when the relation has no other object (or facts carry no relation), an
  object of any other fact; never an arbitrary entity name.
- unknown: the reserved answer token.
- tracing_reversal: the object the model predicts for the prompt when the subject's token embeddings are
  noised (kdel.delete.noise): among the table's objects other than o, the one with the highest probability
  averaged over the noise samples (candidates pre-selected by their first token's noised probability).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kdel.errors import UserError
from kdel.models.tokenizer import UNKNOWN_ANSWER

CANDIDATE_FIRST_TOKENS = 8  # tracing_reversal scores every object whose first token is among the top 8


@dataclass(frozen=True)
class NewTarget:
    text: str
    source: str  # "given" | "same_relation" | "other_object" | "unknown_token" | "corrupted_prediction"
    p_noised: float | None = None  # tracing_reversal: its mean probability under the noised subject

    def to_json(self) -> dict:
        return {"target": self.text, "source": self.source, "p_noised": self.p_noised}


def _given(facts: Sequence, given: Sequence[str]) -> list[NewTarget]:
    targets = list(given) * len(facts) if len(given) == 1 else list(given)
    if len(targets) != len(facts):
        raise UserError(f"{len(given)} new targets given for {len(facts)} facts")
    for f, t in zip(facts, targets):
        if t == f.target:
            raise UserError(f"replace target {t!r} is the fact's own object: pick another entity")
    return [NewTarget(t, "given") for t in targets]


def same_relation_object(table, fact, seed: int) -> NewTarget:
    """A seeded object of another fact of the same relation (type-matched), else of any other fact."""
    rng = random.Random(f"{seed}:{fact.id}")
    if fact.relation is not None:
        pool = sorted({g.target for g in table.facts if g.relation == fact.relation} - {fact.target, fact.subject})
        if pool:
            return NewTarget(rng.choice(pool), "same_relation")
    pool = sorted({g.target for g in table.facts} - {fact.target, fact.subject})
    if not pool:
        raise UserError(f"no other object to replace {fact.target!r} with")
    return NewTarget(rng.choice(pool), "other_object")


def corrupted_prediction(ctx, fact, noise_settings) -> NewTarget:
    """The object (other than o) the model predicts for the canonical prompt with the subject noised."""
    from kdel.delete.noise import first_token_probs, score_rows, subject_noises
    from kdel.models.scoring import _pad_id, encode_prompt, encode_prompt_target

    tok, adapter = ctx.tokenizer, ctx.adapter
    pad = _pad_id(tok)
    objects = sorted({g.target for g in ctx.table.facts} - {fact.target})
    if not objects:
        raise UserError(f"no other object for the tracing reversal of fact {fact.id}")
    noise = subject_noises(adapter, tok, fact.prompt, fact, noise_settings)
    first = first_token_probs(ctx.model, adapter, encode_prompt(tok, fact.prompt), noise, pad)
    encoded = {o: encode_prompt_target(tok, fact.prompt, o) for o in objects}
    top = set(first.topk(min(CANDIDATE_FIRST_TOKENS, first.numel())).indices.tolist())
    candidates = [o for o in objects if encoded[o][1][0] in top] or objects
    rows = [encoded[o] for o in candidates for _ in noise]
    logp, _ = score_rows(ctx.model, adapter, rows, [n for _ in candidates for n in noise], pad)
    p = np.exp(logp.reshape(len(candidates), len(noise))).mean(axis=1)
    best = int(np.argmax(p))
    return NewTarget(candidates[best], "corrupted_prediction", float(p[best]))


def choose_new_targets(objective, facts: Sequence, table, given: Sequence[str] | None = None, seed: int = 0,
                       ctx=None, noise_settings=None) -> list[NewTarget] | None:
    """The new target of each fact for `objective` (an `Objective`); None when it has none, or for
    tracing_reversal without an edit context (`apply_deletion` then computes it on the model)."""
    rule = objective.new_target
    if rule is None or rule in ("unknown", "corrupted"):
        if given:
            raise UserError(f"objective {objective.name!r} takes no new target (--target is for replace)")
    if rule is None:
        return None
    if rule == "unknown":
        return [NewTarget(UNKNOWN_ANSWER, "unknown_token") for _ in facts]
    if rule == "corrupted":
        if ctx is None:
            return None
        from kdel.delete.noise import NoiseSettings

        settings = noise_settings or NoiseSettings(seed=seed)
        return [corrupted_prediction(ctx, f, settings) for f in facts]
    if given:
        return _given(facts, given)
    return [same_relation_object(table, f, seed) for f in facts]
