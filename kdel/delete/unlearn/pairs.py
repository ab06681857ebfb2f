"""(prompt, target) pairs scored together by the unlearning loop, and one differentiable forward pass over them."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch

from kdel.delete.noise import RowNoise, noised_subjects
from kdel.delete.values import token_leads
from kdel.models.hooks import record_outputs
from kdel.models.scoring import (
    Encoded,
    _pad_batch,
    _pad_id,
    encode_prompt_target,
    gather_target_logprobs,
    sequence_logprobs,
)


@dataclass
class ForwardPass:
    """One forward pass over a `Pairs` batch: log-softmax at every target position (kdel's one gather), and
    the outputs of any recorded modules (with gradients)."""

    lp: torch.Tensor  # (T, vocab) float32
    targets: torch.Tensor  # (T,)
    pair: torch.Tensor  # (T,) index of the pair of each target position
    n: int
    hidden: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def logprob(self) -> torch.Tensor:
        """log p(target | prompt) of each pair: (n,)."""
        return sequence_logprobs(self.lp, self.targets, self.pair, self.n)

    @property
    def lengths(self) -> torch.Tensor:
        """Number of target tokens of each pair: (n,)."""
        return torch.zeros(self.n, device=self.pair.device).index_add(0, self.pair, torch.ones_like(self.pair, dtype=torch.float32))

    def leads(self) -> list[torch.Tensor]:
        """Per pair, per target token: log p(token) − max log p(other token) (no gradient)."""
        return token_leads(self.lp, self.targets, self.pair, self.n)


@dataclass
class Pairs:
    """Encoded (prompt, target) pairs, optionally with a noised subject per row (fact forcing)."""

    encoded: list[Encoded]
    pad_id: int
    noise: list[RowNoise | None] | None = None

    @classmethod
    def build(cls, tokenizer, prompts: Sequence[str], targets: Sequence[str],
              noise: Sequence[RowNoise | None] | None = None) -> Pairs:
        encoded = [encode_prompt_target(tokenizer, p, t) for p, t in zip(prompts, targets)]
        return cls(encoded, _pad_id(tokenizer), list(noise) if noise is not None else None)

    def __len__(self) -> int:
        return len(self.encoded)

    def batch(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        return _pad_batch([p + t for p, t in self.encoded], self.pad_id, device)

    def positions(self, which: str, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, positions) of the tokens of each sequence: "answer" = the positions whose next token is a
        target token (last prompt token .. second-to-last target token); "all" = every real token."""
        rows, pos = [], []
        for r, (p, t) in enumerate(self.encoded):
            span = range(len(p) - 1, len(p) + len(t) - 1) if which == "answer" else range(len(p) + len(t))
            rows += [r] * len(span)
            pos += list(span)
        return torch.tensor(rows, device=device), torch.tensor(pos, device=device)

    def forward(self, model, adapter=None, record: dict | None = None) -> ForwardPass:
        """A differentiable pass (noise needs the model's `adapter`; `record`: name -> module whose output to keep)."""
        device = next(model.parameters()).device
        ids, mask = self.batch(device)
        with ExitStack() as stack:
            store = stack.enter_context(record_outputs(record, detach=False)) if record else {}
            if self.noise is not None:
                stack.enter_context(noised_subjects(adapter, self.noise))
            logits = model(input_ids=ids, attention_mask=mask).logits
            hidden = dict(store)
        lp, tgt, pair = gather_target_logprobs(logits, self.encoded)
        return ForwardPass(lp, tgt, pair, len(self.encoded), hidden)
