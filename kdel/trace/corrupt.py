"""Corrupted prompts for causal tracing (DESIGN §5).

- `gn`: ROME's Gaussian noise. The clean token ids are kept; noise of std `scale * sigma` (sigma = std of the
  whole token-embedding matrix) is added to the token embeddings (before any position embedding) at every
  subject position. `n_samples` noise draws, seeded by (seed, fact id), are the rows of the corrupted batch.
- `str`: symmetric token replacement. The subject is replaced by another subject with the same number of
  tokens whose fact of the same relation has an object with a different first token; the corrupted prompt
  then differs from the clean one at the subject positions only, and o' is the partner's object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kdel.errors import UserError
from kdel.facts import Fact, FactTable
from kdel.models.scoring import encode_prompt, encode_prompt_target


@dataclass
class RunInput:
    """The input of one (clean or corrupted) run: token ids, plus optional per-row embedding noise."""

    ids: list[int]
    subject_positions: list[int]
    noise: torch.Tensor | None = None  # (n_samples, n_subject_tokens, d_model), added to the token embeddings

    @property
    def n_rows(self) -> int:
        return 1 if self.noise is None else int(self.noise.shape[0])


@dataclass
class Corruption:
    """A fact's clean run and its corrupted counterpart."""

    kind: str  # "gn" or "str" (what was actually used)
    clean: RunInput
    corrupted: RunInput
    target_id: int  # first token of the object o
    alt_id: int | None  # first token of o' (STR); None for gn (chosen from the corrupted run)
    corrupted_prompt: str
    partner_fact_id: int | None = None


def subject_token_positions(tokenizer, prompt: str, subject: str, ids: list[int] | None = None) -> list[int]:
    """Positions (in the prompt's ids, specials included) of the tokens covering the subject's first occurrence."""
    start = prompt.find(subject)
    if not subject or start < 0:
        raise UserError(f"subject {subject!r} does not occur in the prompt {prompt!r}")
    end = start + len(subject)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(prompt, return_offsets_mapping=True)
        if ids is not None and list(enc["input_ids"]) != list(ids):
            raise ValueError("ids do not match the tokenization of the prompt")
        special = set(tokenizer.all_special_ids)
        pos = [
            i
            for i, ((a, b), tid) in enumerate(zip(enc["offset_mapping"], enc["input_ids"]))
            if b > a and a < end and b > start and tid not in special
        ]
    else:  # slow tokenizer: look for the subject's ids as a contiguous run
        ids = list(ids if ids is not None else encode_prompt(tokenizer, prompt))
        pos = []
        for text in (subject, " " + subject):
            sub = tokenizer(text, add_special_tokens=False)["input_ids"]
            for i in range(len(ids) - len(sub) + 1):
                if sub and ids[i : i + len(sub)] == sub:
                    pos = list(range(i, i + len(sub)))
                    break
            if pos:
                break
    if not pos:
        raise UserError(f"subject {subject!r} has no tokens of its own in the prompt {prompt!r}")
    return pos


def embedding_std(embedding_matrix: torch.Tensor) -> float:
    """sigma of `gn`: the standard deviation of every entry of the token-embedding matrix."""
    return float(embedding_matrix.detach().double().std())


def gaussian_noise(n_samples: int, n_tokens: int, d_model: int, std: float, seed: int, fact_id: int) -> torch.Tensor:
    """Seeded float64 noise (n_samples, n_tokens, d_model): same (seed, fact) -> same noise."""
    rng = np.random.default_rng([int(seed), int(fact_id) & 0xFFFFFFFF])
    return torch.from_numpy(rng.standard_normal((n_samples, n_tokens, d_model)) * std)


def gn_corruption(
    tokenizer, fact: Fact, embedding_matrix: torch.Tensor, n_samples: int, scale: float, seed: int,
    sigma: float | None = None,
) -> Corruption:
    """`sigma`: the embedding matrix's std when already computed (it is the same for every fact)."""
    ids, target_ids = encode_prompt_target(tokenizer, fact.prompt, fact.target)
    pos = subject_token_positions(tokenizer, fact.prompt, fact.subject, ids)
    std = scale * (embedding_std(embedding_matrix) if sigma is None else sigma)
    noise = gaussian_noise(n_samples, len(pos), int(embedding_matrix.shape[1]), std, seed, fact.id)
    clean = RunInput(ids, pos)
    return Corruption("gn", clean, RunInput(ids, pos, noise), target_ids[0], None, fact.prompt)


def _replace_subject(prompt: str, subject: str, other: str) -> str:
    i = prompt.find(subject)
    return prompt[:i] + other + prompt[i + len(subject) :]


def str_partners(tokenizer, fact: Fact, table: FactTable) -> list[tuple[Fact, list[int]]]:
    """Every valid STR partner of `fact`, with the corrupted prompt's ids, in table order.

    Valid: another subject, a fact of the same relation (any fact when relations are unknown), an object
    whose first token differs from o's, and a corrupted prompt with the same length that differs from the
    clean one only at the subject positions.
    """
    ids, target_ids = encode_prompt_target(tokenizer, fact.prompt, fact.target)
    pos = set(subject_token_positions(tokenizer, fact.prompt, fact.subject, ids))
    seen: set[str] = set()
    out = []
    for other in table.facts:
        if other.subject == fact.subject or other.subject in seen:
            continue
        if fact.relation is not None and other.relation != fact.relation:
            continue
        _, other_target = encode_prompt_target(tokenizer, fact.prompt, other.target)
        if other_target[0] == target_ids[0]:
            continue
        cids = encode_prompt(tokenizer, _replace_subject(fact.prompt, fact.subject, other.subject))
        if len(cids) != len(ids) or any(a != b for i, (a, b) in enumerate(zip(ids, cids)) if i not in pos):
            continue
        seen.add(other.subject)
        out.append((other, cids))
    return out


def str_corruption(tokenizer, fact: Fact, table: FactTable, seed: int) -> Corruption:
    """Symmetric token replacement with a seeded choice among the valid partners (UserError if none)."""
    ids, target_ids = encode_prompt_target(tokenizer, fact.prompt, fact.target)
    pos = subject_token_positions(tokenizer, fact.prompt, fact.subject, ids)
    partners = str_partners(tokenizer, fact, table)
    if not partners:
        what = f"relation {fact.relation!r}" if fact.relation is not None else "the facts file"
        raise UserError(
            f"fact {fact.id}: no STR partner for subject {fact.subject!r} (no other subject of {what} with the "
            f"same token length and a different object); use --fallback-gn to trace it with Gaussian noise"
        )
    rng = np.random.default_rng([int(seed), int(fact.id) & 0xFFFFFFFF, 1])
    other, cids = partners[int(rng.integers(len(partners)))]
    _, alt_ids = encode_prompt_target(tokenizer, fact.prompt, other.target)
    corrupted_prompt = _replace_subject(fact.prompt, fact.subject, other.subject)
    return Corruption(
        "str", RunInput(ids, pos), RunInput(cids, pos), target_ids[0], alt_ids[0], corrupted_prompt, other.id
    )
