"""Values for locate-then-edit methods: the v* side of ROME's compute_v, for any objective.

`optimise_value` finds the vector δ that, added to a module's output at the edit site of every edit text,
makes the model meet the objective (kdel.delete.objectives: the objective supplies the aim target's loss and
the stopping test, so nothing here depends on which objective it is), with a KL term on the subject's other
training prompts (δ added at their own edit site too: the edit reaches them through the same key), an
optional norm penalty and a norm clamp. A noised subject (fact forcing) comes with the edit texts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kdel.delete.keys import EditText
from kdel.delete.noise import noised_subjects
from kdel.models.adapter import first_tensor, with_first_tensor
from kdel.models.hooks import record_outputs
from kdel.models.scoring import (
    _pad_batch,
    _pad_id,
    encode_prompt,
    encode_prompt_target,
    gather_target_logprobs,
    sequence_logprobs,
)


@dataclass
class ValueSettings:
    lr: float
    steps: int
    clamp_factor: float  # ||δ|| <= clamp_factor * ||v0||
    kl_factor: float
    weight_decay: float  # penalty weight_decay * ||δ||² / ||v0||²
    margin: float  # log-prob margin of the stopping test (the objective's `met`)


@dataclass
class ValueResult:
    delta: torch.Tensor  # (d_model,) float32 on the model's device
    v0_norm: float
    steps: int
    met: bool  # objective met with margin on every edit text under the hook
    loss_first: float
    loss_last: float
    objective_first: float
    objective_last: float
    history: list[float] = field(default_factory=list)

    def info(self, prefix: str = "v") -> dict:
        return {
            f"{prefix}_steps": self.steps,
            f"{prefix}_met_under_hook": self.met,
            f"{prefix}_loss_first": self.loss_first,
            f"{prefix}_loss_last": self.loss_last,
            f"{prefix}_objective_first": self.objective_first,
            f"{prefix}_objective_last": self.objective_last,
            f"{prefix}_delta_norm": float(self.delta.norm()),
            f"{prefix}_v0_norm": self.v0_norm,
        }


def token_leads(lp: torch.Tensor, targets: torch.Tensor, pair: torch.Tensor, n: int) -> list[torch.Tensor]:
    """Per text, per aim token: log p(token) − max log p(any other token) (no gradient)."""
    lp = lp.detach()
    own = lp.gather(1, targets[:, None])[:, 0]
    other = lp.scatter(1, targets[:, None], float("-inf")).max(dim=-1).values
    lead = own - other
    return [lead[pair == i] for i in range(n)]


def optimise_value(adapter, tokenizer, module, items: list[EditText], objective, aim_target: str,
                   kl_items: list[EditText], settings: ValueSettings, seed: int = 0) -> ValueResult:
    """Optimise δ (Adam) added to `module`'s output at every item's edit site (KL: next-token distribution of
    the KL prompts against the unedited model). `objective` is a kdel.delete.objectives.Objective."""
    model = adapter.model
    device = adapter.device
    encoded = [encode_prompt_target(tokenizer, it.text, aim_target) for it in items]
    kl_ids = [encode_prompt(tokenizer, it.text) for it in kl_items]
    input_ids, mask = _pad_batch([p + t for p, t in encoded] + kl_ids, _pad_id(tokenizer), device)
    n_rw = len(encoded)
    rows = torch.arange(n_rw + len(kl_ids), device=device)
    # δ goes to the edit site of every text (KL prompts included)
    sites = torch.tensor([it.site for it in items] + [it.site for it in kl_items], device=device)
    kl_last = torch.tensor([len(k) - 1 for k in kl_ids], device=device, dtype=torch.long)
    noise = [it.noise for it in items]

    def forward():
        with noised_subjects(adapter, noise):
            return model(input_ids=input_ids, attention_mask=mask).logits

    with torch.no_grad(), record_outputs({"m": module}) as store:
        logits0 = forward()
    v0 = first_tensor(store["m"])[rows[:n_rw], sites[:n_rw]].float()
    v0_norm = float(v0[0].norm()) if n_rw else 1.0
    kl_ref = torch.log_softmax(logits0[rows[n_rw:], kl_last].float(), dim=-1) if kl_ids else None

    gen = torch.Generator(device="cpu").manual_seed(seed)
    d_model = v0.shape[-1]
    delta = torch.zeros(d_model, device=device, dtype=torch.float32)
    delta += 1e-6 * torch.randn(d_model, generator=gen).to(device)  # break exact symmetry, reproducibly
    delta.requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=settings.lr)
    max_norm = settings.clamp_factor * v0_norm

    def add_delta(_m, _i, out):
        h = first_tensor(out)
        add = torch.zeros_like(h)
        add[rows, sites] = delta.to(h.dtype)
        return with_first_tensor(out, h + add)

    history: list[float] = []
    obj_hist: list[float] = []
    met = False
    steps = 0
    for step in range(settings.steps + 1):
        handle = module.register_forward_hook(add_delta)
        try:
            logits = forward()
        finally:
            handle.remove()
        lp, tgt, pair = gather_target_logprobs(logits[:n_rw], encoded)
        aim_logp = sequence_logprobs(lp, tgt, pair, n_rw)
        met = objective.met(token_leads(lp, tgt, pair, n_rw), settings.margin)
        obj = objective.loss(aim_logp)
        loss = obj
        if kl_ref is not None and settings.kl_factor > 0:
            cur = torch.log_softmax(logits[rows[n_rw:], kl_last].float(), dim=-1)
            kl = torch.nn.functional.kl_div(cur, kl_ref, log_target=True, reduction="batchmean")
            loss = loss + settings.kl_factor * kl
        loss = loss + settings.weight_decay * delta.norm() ** 2 / max(v0_norm, 1e-12) ** 2
        history.append(float(loss.detach()))
        obj_hist.append(float(obj.detach()))
        if met or step == settings.steps:
            break
        (grad,) = torch.autograd.grad(loss, [delta])
        delta.grad = grad
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps += 1
        with torch.no_grad():
            n = delta.norm()
            if n > max_norm > 0:
                delta.mul_(max_norm / n)
    return ValueResult(
        delta=delta.detach().clone(), v0_norm=v0_norm, steps=steps, met=met,
        loss_first=history[0], loss_last=history[-1], objective_first=obj_hist[0], objective_last=obj_hist[-1],
        history=history,
    )
