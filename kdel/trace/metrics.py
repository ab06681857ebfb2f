"""Tracing metrics on the last prompt position, and their normalised effects (DESIGN §5, §12).

All metrics score the object's FIRST token at the last prompt position, as ROME's causal tracing does
(whole-object p(o) of §12 is what the audit reports; a trace needs one next-token distribution per site).
With several noise samples, a site's value is the mean over the samples of the per-row metric (for `prob`
this is ROME's score: the mean probability).

- prob = p(o), logprob = log p(o), logit_diff = z_o - z_o' (o' = STR's corrupted answer, or for gn the
  corrupted run's top token other than o), kl = KL(p_clean || p_run).
- Normalised effect, denoising: (M_patched - M_*) / (M_clean - M_*); noising: (M_clean - M_patched) /
  (M_clean - M_*). For kl, M_clean = 0, so denoising gives 1 - KL_patched / KL_* exactly as §12 says, and
  noising gives KL_patched / KL_*.
"""

from __future__ import annotations

import numpy as np
import torch

METRICS = ("prob", "logprob", "logit_diff", "kl")


def row_metrics(logits: torch.Tensor, target_id: int, alt_id: int, clean_logprobs: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-row metric values from last-position logits (rows, vocab), computed in float64."""
    z = logits.double()
    lp = torch.log_softmax(z, dim=-1)
    clp = clean_logprobs.double().to(z.device)
    kl = (clp.exp() * (clp - lp)).sum(-1)
    return {
        "prob": lp[:, target_id].exp().cpu().numpy(),
        "logprob": lp[:, target_id].cpu().numpy(),
        "logit_diff": (z[:, target_id] - z[:, alt_id]).cpu().numpy(),
        "kl": kl.cpu().numpy(),
    }


def mean_metrics(values: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.mean(v)) for k, v in values.items()}


def normalized_effect(patched, clean: float, corrupted: float, direction: str):
    """The normalised effect of §5 (nan where the clean and corrupted values are equal)."""
    patched = np.asarray(patched, dtype=np.float64)
    gap = clean - corrupted
    with np.errstate(divide="ignore", invalid="ignore"):
        if direction == "denoise":
            out = (patched - corrupted) / gap
        elif direction == "noise":
            out = (clean - patched) / gap
        else:
            raise ValueError(f"unknown direction {direction!r}")
    return np.where(gap == 0, np.nan, out)


def signed_effect(patched, clean: float, corrupted: float, direction: str) -> np.ndarray:
    """The normalised effect's numerator with the sign of the gap: same argmax, defined when the gap is 0."""
    patched = np.asarray(patched, dtype=np.float64)
    num = patched - corrupted if direction == "denoise" else clean - patched
    return num * (1.0 if clean >= corrupted else -1.0)


def indirect_effect(patched_prob, corrupted_prob: float) -> np.ndarray:
    """ROME's indirect effect: p_patched(o) - p_*(o)."""
    return np.asarray(patched_prob, dtype=np.float64) - corrupted_prob
