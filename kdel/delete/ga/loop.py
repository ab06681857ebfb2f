"""The gradient-edit loop shared by `ft`, `ga` and `npo`: Adam on chosen parameters, optional retain term,
optional projection after each step, and early stopping as soon as the objective is met.

The stopping test is read off the same forward pass that computes the loss (so it costs nothing) and
is therefore evaluated on the weights as they are (after any projection), never on a hook. It is met when,
on every forget prompt:
- erase: some token of the object is beaten by another token by at least `margin` in log-probability
  (so the whole object is no longer top-1 under teacher forcing, with a margin);
- rewriting objectives: every token of the new target is top-1 with a lead of at least `margin`;
- amplify: never (runs all steps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from kdel.models.scoring import Encoded, _pad_batch, _pad_id, encode_prompt_target


@dataclass
class Pairs:
    """Encoded (prompt, target) pairs scored together."""

    encoded: list[Encoded]
    pad_id: int

    @classmethod
    def build(cls, tokenizer, prompts: Sequence[str], targets: Sequence[str]) -> Pairs:
        return cls([encode_prompt_target(tokenizer, p, t) for p, t in zip(prompts, targets)], _pad_id(tokenizer))

    def __len__(self) -> int:
        return len(self.encoded)


def target_token_logprobs(model, pairs: Pairs) -> list[torch.Tensor]:
    """Differentiable log-softmax at each target position of each pair: a list of (n_target_tokens, vocab)."""
    device = next(model.parameters()).device
    ids, mask = _pad_batch([p + t for p, t in pairs.encoded], pairs.pad_id, device)
    logits = model(input_ids=ids, attention_mask=mask).logits
    out = []
    for row, (p, t) in enumerate(pairs.encoded):
        out.append(torch.log_softmax(logits[row, len(p) - 1 : len(p) + len(t) - 1].float(), dim=-1))
    return out


def sequence_logprob(token_lps: list[torch.Tensor], pairs: Pairs) -> torch.Tensor:
    """log p(target | prompt) of each pair (sum over target tokens): shape (n,)."""
    device = token_lps[0].device
    return torch.stack(
        [lp.gather(1, torch.tensor(t, device=device)[:, None]).sum() for lp, (_, t) in zip(token_lps, pairs.encoded)]
    )


@torch.no_grad()
def _lead(lp: torch.Tensor, target: list[int]) -> torch.Tensor:
    """Per target token: log p(target token) - max log p(any other token)."""
    tgt = torch.tensor(target, device=lp.device)
    own = lp.gather(1, tgt[:, None])[:, 0]
    others = lp.clone()
    others.scatter_(1, tgt[:, None], float("-inf"))
    return own - others.max(dim=1).values


def erase_margin(token_lps: list[torch.Tensor], pairs: Pairs) -> torch.Tensor:
    """Per pair: how far the object is from being recalled (>0 = not recalled), in log-probability."""
    return torch.stack([(-_lead(lp.detach(), t)).max() for lp, (_, t) in zip(token_lps, pairs.encoded)])


def recall_margin(token_lps: list[torch.Tensor], pairs: Pairs) -> torch.Tensor:
    """Per pair: the smallest lead of a target token over its best rival (>0 = recalled)."""
    return torch.stack([_lead(lp.detach(), t).min() for lp, (_, t) in zip(token_lps, pairs.encoded)])


@dataclass
class RetainTerm:
    """A retain-set penalty: 'gd' = NLL of the retain facts (gradient difference), 'kl' = KL(p_ref || p) at
    their target positions, p_ref the model before editing (computed once, in `prepare`)."""

    kind: str  # "gd" | "kl"
    pairs: Pairs
    weight: float
    ref_lps: list[torch.Tensor] = field(default_factory=list)

    def prepare(self, model) -> None:
        if self.kind == "kl":
            with torch.no_grad():
                self.ref_lps = [lp.detach() for lp in target_token_logprobs(model, self.pairs)]

    def loss(self, model) -> torch.Tensor:
        lps = target_token_logprobs(model, self.pairs)
        if self.kind == "gd":
            return -sequence_logprob(lps, self.pairs).mean()
        kl = [(ref.exp() * (ref - cur)).sum(dim=-1).mean() for ref, cur in zip(self.ref_lps, lps)]
        return torch.stack(kl).mean()


@dataclass
class LoopResult:
    steps: int  # optimiser steps taken
    met: bool  # objective met on every forget prompt with the final weights
    first_loss: float
    last_loss: float
    final_margin: float  # the worst forget prompt's margin (erase_margin or recall_margin) at the end

    def to_json(self) -> dict:
        return {
            "steps": self.steps,
            "met": self.met,
            "first_loss": self.first_loss,
            "last_loss": self.last_loss,
            "final_margin": self.final_margin,
        }


def run_gradient_edit(
    model,
    params: list[torch.nn.Parameter],
    forget: Pairs,
    forget_loss: Callable[[list[torch.Tensor]], torch.Tensor],
    margin_fn: Callable[[list[torch.Tensor]], torch.Tensor] | None,
    margin: float,
    lr: float,
    steps: int,
    retain: RetainTerm | None = None,
    early_stop: bool = True,
    max_grad_norm: float | None = None,
    project: Callable[[], None] | None = None,
) -> LoopResult:
    """Minimise forget_loss (+ retain.weight * retain.loss) over `params` with Adam, in place."""
    own = {id(p) for p in params}
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in own)
    was_training = model.training
    model.eval()
    opt = torch.optim.Adam(params, lr=lr)
    first = last = float("nan")
    taken = 0
    try:
        if retain is not None:
            retain.prepare(model)
        with torch.enable_grad():
            for step in range(steps + 1):
                lps = target_token_logprobs(model, forget)
                margins = margin_fn(lps) if margin_fn is not None else None
                met = margins is not None and bool((margins >= margin).all())
                if step == steps or (early_stop and met):
                    break
                loss = forget_loss(lps)
                if retain is not None:
                    loss = loss + retain.weight * retain.loss(model)
                last = float(loss.detach())
                if step == 0:
                    first = last
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                opt.step()
                if project is not None:
                    project()
                taken += 1
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])
            p.grad = None
        model.train(was_training)
    worst = float(margins.min()) if margins is not None else float("nan")
    return LoopResult(taken, bool(met), first, last, worst)
