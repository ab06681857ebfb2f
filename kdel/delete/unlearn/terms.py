"""Retain terms of the unlearning loop: penalties that keep the retain set (kdel.delete.retain) as it was.

- `gd` (gradient difference): the NLL of the retain facts' objects;
- `kl`: KL(p_ref || p) of the next-token distributions at their target positions, p_ref = the model before
  the edit (computed once, in `prepare`);
- `act` (RMU's retain loss): the mean squared difference (over tokens and dimensions, as the reference's MSE)
  between the hidden state at a module, on every token of the retain texts, and the frozen model's (computed
  once, in `prepare`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kdel.delete.unlearn.pairs import Pairs


@dataclass
class RetainTerm:
    kind: str  # "gd" | "kl" | "act"
    pairs: Pairs
    weight: float
    module: torch.nn.Module | None = None  # "act": the module whose output is held
    ref: list[torch.Tensor] = field(default_factory=list)

    def _hidden(self, model) -> torch.Tensor:
        device = next(model.parameters()).device
        rows, pos = self.pairs.positions("all", device)
        h = self.pairs.forward(model, record={"h": self.module}).hidden["h"]
        return h[rows, pos]

    def prepare(self, model) -> None:
        if self.kind == "kl":
            with torch.no_grad():
                self.ref = [self.pairs.forward(model).lp.detach()]
        elif self.kind == "act":
            if self.module is None:
                raise ValueError("an 'act' retain term needs a module")
            with torch.no_grad():
                self.ref = [self._hidden(model).detach()]

    def loss(self, model) -> torch.Tensor:
        if self.kind == "gd":
            return -self.pairs.forward(model).logprob.mean()
        if self.kind == "act":
            return ((self._hidden(model).float() - self.ref[0].float()) ** 2).mean()
        fp = self.pairs.forward(model)
        ref = self.ref[0]
        per_token = (ref.exp() * (ref - fp.lp)).sum(dim=-1)
        counts = torch.zeros(fp.n, device=per_token.device).index_add(0, fp.pair, torch.ones_like(per_token))
        per_pair = torch.zeros(fp.n, device=per_token.device).index_add(0, fp.pair, per_token) / counts
        return per_pair.mean()
