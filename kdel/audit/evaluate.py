"""Batched evaluation of one deletion case: probe-group damage, global accuracy, KL, efficacy, Hase scores.

Cost model (DESIGN §10): the base model scores every prompt of every fact once per run/worker
(`BaseScores`); after an edit, ONE batched pass (`forward_scores`) over the union of the case's prompts
(every fact's canonical prompt for global accuracy and the probe groups, the target's training and
held-out prompts, the new target's prompts) yields target scores and, from the same logits, the
next-token distributions of the `unrelated` prompts for the KL.

Probe prompts: a fact of a non-target group is probed with its canonical prompt (prompts[0]); the
`target` group uses all of the fact's training prompts; `paraphrase` its held-out prompts.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kdel.models.scoring import Encoded, TargetScores, _pad_id, encode_prompt_target, forward_scores

WRECK_THRESHOLD = 0.9  # §12 collateral bound: unrelated accuracy below this = the edit wrecked the model


class ProbeRows:
    """Every (prompt, true object) row of every fact, encoded once: training prompts, then held-out ones."""

    def __init__(self, tok, table):
        self.encoded: list[Encoded] = []
        self.train: list[list[int]] = []
        self.para: list[list[int]] = []
        for f in table.facts:
            rows = []
            for p in f.prompts:
                rows.append(len(self.encoded))
                self.encoded.append(encode_prompt_target(tok, p, f.target))
            self.train.append(rows)
            rows = []
            for p in f.paraphrases:
                rows.append(len(self.encoded))
                self.encoded.append(encode_prompt_target(tok, p, f.target))
            self.para.append(rows)
        self.canonical = [rows[0] for rows in self.train]

    def digest(self) -> bytes:
        """sha256 of every encoded row (equal digests: the same rows in the same order)."""
        h = hashlib.sha256()
        for prompt_ids, target_ids in self.encoded:
            h.update(np.asarray(prompt_ids, dtype=np.int64).tobytes() + b"|")
            h.update(np.asarray(target_ids, dtype=np.int64).tobytes() + b";")
        return h.digest()


@dataclass
class BaseScores:
    """The unedited model's scores of every probe row, and the unrelated prompts' next-token distributions."""

    rows: ProbeRows
    scores: TargetScores
    dists: dict[int, torch.Tensor]  # canonical row of an unrelated-pool fact -> log p(next token)
    unrelated_pool: list[int]
    pad_id: int

    @classmethod
    def compute(cls, model, tok, table, unrelated_pool: Sequence[int]) -> BaseScores:
        rows = ProbeRows(tok, table)
        pad = _pad_id(tok)
        dist_rows = [rows.canonical[i] for i in unrelated_pool]
        scores, dists = forward_scores(model, rows.encoded, pad, dist_rows)
        return cls(rows, scores, dists, list(unrelated_pool), pad)

    def canonical_recalled(self) -> np.ndarray:
        return self.scores.recalled[self.rows.canonical]

    # -- sharing with worker processes and Ray actors: plain arrays, no pickled objects ----------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The scores as named numpy arrays (what a worker needs besides the tokenizer and the table)."""
        out = {f"scores.{k}": np.asarray(getattr(self.scores, k)) for k in TargetScores.__dataclass_fields__}
        pool = np.asarray(self.unrelated_pool, dtype=np.int64)
        rows = [self.rows.canonical[i] for i in self.unrelated_pool]
        vocab = next(iter(self.dists.values())).shape[-1] if self.dists else 0
        out["dists"] = (torch.stack([self.dists[r] for r in rows]).numpy() if rows
                        else np.zeros((0, vocab), dtype=np.float32))
        out["unrelated_pool"] = pool
        out["pad_id"] = np.asarray([self.pad_id], dtype=np.int64)
        out["rows_digest"] = np.frombuffer(self.rows.digest(), dtype=np.uint8).copy()
        return out

    @classmethod
    def from_arrays(cls, tok, table, arrays: dict[str, np.ndarray]) -> BaseScores:
        """Rebuild the parent's base scores in a worker (the probe rows are re-encoded and must match)."""
        rows = ProbeRows(tok, table)
        if bytes(np.asarray(arrays["rows_digest"], dtype=np.uint8)) != rows.digest():
            raise RuntimeError("the worker encodes the probe prompts differently from the parent process")
        scores = TargetScores(**{k: np.array(arrays[f"scores.{k}"]) for k in TargetScores.__dataclass_fields__})
        pool = [int(i) for i in arrays["unrelated_pool"]]
        dists = {rows.canonical[i]: torch.tensor(np.asarray(arrays["dists"][j])) for j, i in enumerate(pool)}
        return cls(rows, scores, dists, pool, int(arrays["pad_id"][0]))


def _mean(x) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()) if x.size else None


def _clean(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def neighborhood_score(p_pre: np.ndarray, p_post: np.ndarray) -> np.ndarray:
    """Hase et al.: 1 - |p_post - p_pre| / (0.5 + |p_pre - 0.5|) (1 = unchanged)."""
    return 1.0 - np.abs(p_post - p_pre) / (0.5 + np.abs(p_pre - 0.5))


def rewrite_score(p_pre, p_post):
    """Hase et al.'s rewrite/paraphrase score for objectives that raise a probability: 1 - (1-p_post)/(1-p_pre)."""
    p_pre = np.asarray(p_pre, dtype=np.float64)
    p_post = np.asarray(p_post, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - (1.0 - p_post) / (1.0 - p_pre)


def erasure_score(p_pre, p_post):
    """Hase et al.'s erasure score: max(0, (p_pre - p_post) / p_pre)."""
    p_pre = np.asarray(p_pre, dtype=np.float64)
    p_post = np.asarray(p_post, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.maximum(0.0, (p_pre - p_post) / p_pre)


def group_metrics(before: TargetScores, after: TargetScores) -> dict:
    """Metrics of one probe group from its rows' scores before and after (rows aligned)."""
    n = len(before)
    elig = before.recalled
    k = int(elig.sum())
    pb, pa = before.prob, after.prob
    flipped = elig & ~after.recalled
    gained = ~elig & after.recalled
    return {
        "n": n,
        "n_recalled_before": k,
        "acc_before": _mean(before.recalled),
        "acc_after": _mean(after.recalled),
        "acc_after_recalled": _mean(after.recalled[elig]),
        "flip_rate": _mean(flipped[elig]),
        "n_flipped": int(flipped.sum()),
        "any_broke": bool(flipped.any()) if k else None,
        "n_gained": int(gained.sum()),
        "mean_logp_before": _mean(before.logprob[elig]),
        "mean_logp_after": _mean(after.logprob[elig]),
        "mean_p_before": _mean(pb[elig]),
        "mean_p_after": _mean(pa[elig]),
        "mean_p_drop": _mean((pb - pa)[elig]),
        "hase_neighborhood": _mean(neighborhood_score(pb, pa)) if n else None,
    }


def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> float:
    """KL(p || q) in nats from two log-distributions."""
    return float((log_p.double().exp() * (log_p.double() - log_q.double())).sum())


def new_target_rows(tok, fact, new_target: str) -> list[Encoded]:
    """The fact's training prompts then held-out prompts, with the NEW target (for rewriting objectives)."""
    return [encode_prompt_target(tok, p, new_target) for p in list(fact.prompts) + list(fact.paraphrases)]
