"""A noised subject for fact forcing and tracing reversal (Hase et al. 2023), as ROME's `gn` corruption.

Gaussian noise of std `scale`·σ (σ = the std of the token-embedding matrix, scale 3 as in ROME's causal tracing)
is added to the token embeddings at the subject's positions. Noise sample j of a fact is the same seeded draw
(kdel.trace.corrupt.gaussian_noise, seeded by (seed, fact id)) in every phrasing with the same number of
subject tokens, so "the corrupted model" is one fixed set of samples per fact. Optimisation and evaluation use
different seeds (`EVAL_SEED_OFFSET`): efficacy is measured on noise the optimisation never saw.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from kdel.models.scoring import Encoded, _pad_batch, gather_target_logprobs, sequence_logprobs
from kdel.trace.corrupt import embedding_std, gaussian_noise, subject_token_positions

NOISE_SCALE = 3.0  # ROME's 3σ
NOISE_SAMPLES = 10  # Hase et al. use 10 noise samples for fact forcing
EVAL_SEED_OFFSET = 7919  # evaluation noise = seed + this (never the optimisation's draws)


@dataclass(frozen=True)
class NoiseSettings:
    samples: int = NOISE_SAMPLES
    scale: float = NOISE_SCALE
    seed: int = 0

    def for_evaluation(self) -> NoiseSettings:
        return NoiseSettings(self.samples, self.scale, self.seed + EVAL_SEED_OFFSET)


@dataclass
class RowNoise:
    """Noise added to one batch row's token embeddings: `values[i]` at token position `positions[i]`."""

    positions: list[int]
    values: torch.Tensor  # (n_positions, d_model), float64


def subject_noises(adapter, tokenizer, text: str, fact, settings: NoiseSettings) -> list[RowNoise]:
    """The `settings.samples` noised versions of `text` (whose subject is `fact.subject`), one per sample."""
    pos = subject_token_positions(tokenizer, text, fact.subject)
    emb = adapter.embedding_matrix()
    std = settings.scale * embedding_std(emb)
    draws = gaussian_noise(settings.samples, len(pos), int(emb.shape[1]), std, settings.seed, fact.id)
    return [RowNoise(list(pos), draws[j]) for j in range(settings.samples)]


@contextmanager
def noised_subjects(adapter, rows: Sequence[RowNoise | None]) -> Iterator[None]:
    """Within the block, row r of every batch gets `rows[r]` added to its token embeddings (rows past the end,
    or None, are clean). The caller keeps batch rows in the order of `rows`."""
    if not any(r is not None for r in rows):
        yield
        return
    device = adapter.device

    def hook(_m, _inp, out):
        out = out.clone()
        for r, noise in enumerate(rows[: out.shape[0]]):
            if noise is not None:
                pos = torch.tensor(noise.positions, device=device)
                out[r, pos] = out[r, pos] + noise.values.to(device=device, dtype=out.dtype)
        return out

    handle = adapter.embed.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def score_rows(model, adapter, encoded: Sequence[Encoded], noise: Sequence[RowNoise | None], pad_id: int,
               batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(log p(target), whole-target recall) of each (prompt, target) row, row r with `noise[r]` on its subject."""
    logprob = np.zeros(len(encoded), dtype=np.float64)
    recalled = np.zeros(len(encoded), dtype=bool)
    device = adapter.device
    for start in range(0, len(encoded), batch_size):
        chunk = list(encoded[start : start + batch_size])
        ids, mask = _pad_batch([p + t for p, t in chunk], pad_id, device)
        with noised_subjects(adapter, list(noise[start : start + batch_size])):
            logits = model(input_ids=ids, attention_mask=mask).logits
        lp, tgt, pair = gather_target_logprobs(logits, chunk)
        miss = (lp.argmax(dim=-1) != tgt).long()
        n = len(chunk)
        logprob[start : start + n] = sequence_logprobs(lp.double(), tgt, pair, n).cpu().numpy()
        recalled[start : start + n] = (torch.zeros(n, dtype=torch.long, device=device).index_add(0, pair, miss) == 0).cpu().numpy()
    return logprob, recalled


@torch.no_grad()
def first_token_probs(model, adapter, prompt_ids: list[int], noise: Sequence[RowNoise], pad_id: int) -> torch.Tensor:
    """Mean over the noise samples of the next-token distribution after the prompt: (vocab,)."""
    ids, mask = _pad_batch([prompt_ids] * len(noise), pad_id, adapter.device)
    with noised_subjects(adapter, list(noise)):
        logits = model(input_ids=ids, attention_mask=mask).logits[:, len(prompt_ids) - 1]
    return torch.softmax(logits.float(), dim=-1).mean(dim=0).cpu()
