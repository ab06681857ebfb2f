"""Keys and values for locate-then-edit methods (ROME, r-ROME, MEMIT).

* `edit_texts`: the texts an edit is computed on: each chosen training prompt of the fact, bare and after
  a few context prefixes. Prefixes are whole sentences drawn (seeded) from the training corpus, so every
  token is in the toy model's vocabulary (DESIGN §12; ROME's generated English prefixes would not be).
* `keys_at_site`: the input of the MLP output projection (the key) at the edit site of each text.
* `optimise_delta`: the vector δ that, added to a module's output at the edit site of every text, makes the
  model meet the objective (erase: lower p(o) until o is not top-1 by a log-prob margin; rewrite: raise the
  new target), with a KL term on the subject's other training prompts and a norm clamp.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from kdel.delete.objectives import REWRITING, objective_loss
from kdel.models.adapter import first_tensor, with_first_tensor
from kdel.models.hooks import record_inputs, record_outputs
from kdel.models.positions import site_position
from kdel.models.scoring import _pad_batch, _pad_id, encode_prompt, encode_prompt_target


@dataclass
class EditText:
    text: str  # context prefix + prompt (the prompt alone when bare)
    site: int  # token index of the edit site in tok(text)
    bare: bool  # no context prefix
    canonical: bool  # the fact's canonical prompt (prompts[0]), bare


def context_prefixes(table, fact, n: int, seed: int) -> list[str]:
    """`n` distinct training sentences (seeded per fact) that neither mention the subject nor state the fact."""
    if n <= 0:
        return []
    lines = table.training_prompts()
    pool = sorted({ln.strip() for ln in lines if ln.strip() and fact.subject not in ln})
    if not pool:
        pool = sorted({ln.strip() for ln in lines if ln.strip()})
    rng = random.Random(f"{seed}:{fact.id}")
    return rng.sample(pool, min(n, len(pool)))


def edit_texts(tokenizer, table, fact, site: str, n_prefixes: int, n_templates: int, seed: int) -> list[EditText]:
    """The fact's first `n_templates` training prompts (0 = all), bare and after each context prefix."""
    prompts = list(fact.prompts) if n_templates <= 0 else list(fact.prompts[:n_templates])
    prefixes = context_prefixes(table, fact, n_prefixes, seed)
    out = []
    for i, prompt in enumerate(prompts):
        for j, prefix in enumerate([""] + prefixes):
            text = prompt if not prefix else f"{prefix} {prompt}"
            out.append(EditText(text, site_position(tokenizer, text, fact.subject, site), j == 0, i == 0 and j == 0))
    return out


@torch.no_grad()
def _run_texts(model, tokenizer, texts: list[str]):
    ids = [encode_prompt(tokenizer, t) for t in texts]
    input_ids, mask = _pad_batch(ids, _pad_id(tokenizer), next(model.parameters()).device)
    return input_ids, mask


@torch.no_grad()
def keys_at_site(adapter, tokenizer, layer: int, items: list[EditText]) -> torch.Tensor:
    """(n, d_mlp) float64: the key (input of layer's MLP output projection) at each item's edit site."""
    input_ids, mask = _run_texts(adapter.model, tokenizer, [it.text for it in items])
    with record_inputs({"k": adapter.mlp_out(layer)}) as store:
        adapter.model(input_ids=input_ids, attention_mask=mask)
    rows = torch.arange(len(items), device=input_ids.device)
    pos = torch.tensor([it.site for it in items], device=input_ids.device)
    return store["k"][rows, pos].double()


@torch.no_grad()
def outputs_at_site(adapter, tokenizer, module, items: list[EditText]) -> torch.Tensor:
    """(n, d_model) float64: `module`'s hidden-state output at each item's edit site."""
    input_ids, mask = _run_texts(adapter.model, tokenizer, [it.text for it in items])
    with record_outputs({"m": module}) as store:
        adapter.model(input_ids=input_ids, attention_mask=mask)
    rows = torch.arange(len(items), device=input_ids.device)
    pos = torch.tensor([it.site for it in items], device=input_ids.device)
    return store["m"][rows, pos].double()


def kl_items_for(tokenizer, table, fact, site: str, n: int) -> list[EditText]:
    """Up to `n` canonical prompts of the subject's other facts (in-vocabulary, DESIGN §12), with their site."""
    if n <= 0:
        return []
    seen, out = set(fact.prompts), []
    for other in table.facts:
        if other.subject != fact.subject or other.id == fact.id:
            continue
        p = other.prompt
        if p in seen:
            continue
        seen.add(p)
        out.append(EditText(p, site_position(tokenizer, p, fact.subject, site), True, False))
        if len(out) >= n:
            break
    return out


@dataclass
class DeltaSettings:
    lr: float
    steps: int
    clamp_factor: float  # ||δ|| <= clamp_factor * ||v0||
    kl_factor: float
    weight_decay: float  # penalty weight_decay * ||δ||² / ||v0||²
    margin: float  # log-prob margin of the early stop (erase: o beaten by this much; rewrite: new target wins by it)


@dataclass
class DeltaResult:
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


def _token_margins(logits_rows: list[torch.Tensor], targets: list[list[int]]) -> list[torch.Tensor]:
    """Per text, per target token: log p(target token) − max log p(other token)."""
    out = []
    for lg, t in zip(logits_rows, targets):
        lp = torch.log_softmax(lg.float(), dim=-1)
        tgt = torch.tensor(t, device=lp.device)
        own = lp.gather(1, tgt[:, None])[:, 0]
        other = lp.scatter(1, tgt[:, None], float("-inf")).max(dim=-1).values
        out.append(own - other)
    return out


def optimise_delta(
    model,
    tokenizer,
    module,
    items: list[EditText],
    objective: str,
    true_target: str,
    new_target: str | None,
    kl_items: list[EditText],
    settings: DeltaSettings,
    seed: int = 0,
) -> DeltaResult:
    """Optimise δ (Adam) added to `module`'s output at every item's edit site (KL: next-token distribution of
    the KL prompts, with δ at their own edit site, against the unedited model)."""
    device = next(model.parameters()).device
    aim = new_target if objective in REWRITING else true_target
    encoded = [encode_prompt_target(tokenizer, it.text, aim) for it in items]
    kl_ids = [encode_prompt(tokenizer, it.text) for it in kl_items]
    seqs = [p + t for p, t in encoded] + kl_ids
    input_ids, mask = _pad_batch(seqs, _pad_id(tokenizer), device)
    n_rw = len(encoded)
    rows = torch.arange(len(seqs), device=device)
    # δ goes to the edit site of every text (KL prompts included: the edit reaches them through the same key)
    sites = torch.tensor([it.site for it in items] + [it.site for it in kl_items], device=device)
    kl_last = torch.tensor([len(k) - 1 for k in kl_ids], device=device, dtype=torch.long)

    with torch.no_grad(), record_outputs({"m": module}) as store:
        logits0 = model(input_ids=input_ids, attention_mask=mask).logits
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

    def add_delta(out):
        h = first_tensor(out)
        add = torch.zeros_like(h)
        add[rows, sites] = delta.to(h.dtype)
        return with_first_tensor(out, h + add)

    history: list[float] = []
    obj_hist: list[float] = []
    met = False
    steps = 0
    for step in range(settings.steps + 1):
        handle = module.register_forward_hook(lambda _m, _i, out: add_delta(out))
        try:
            logits = model(input_ids=input_ids, attention_mask=mask).logits
        finally:
            handle.remove()
        tgt_rows, tgt_ids = [], []
        for r, (p, t) in enumerate(encoded):
            pos = torch.arange(len(p) - 1, len(p) + len(t) - 1, device=device)
            tgt_rows.append(logits[r, pos])
            tgt_ids.append(t)
        logp = torch.stack(
            [torch.log_softmax(lg.float(), -1).gather(1, torch.tensor(t, device=device)[:, None]).sum()
             for lg, t in zip(tgt_rows, tgt_ids)]
        )
        with torch.no_grad():
            margins = _token_margins([lg.detach() for lg in tgt_rows], tgt_ids)
            if objective == "erase":
                met = all(bool((-m).max() >= settings.margin) for m in margins)
            else:
                met = all(bool(m.min() >= settings.margin) for m in margins)
        if objective in REWRITING:
            obj = objective_loss(objective, logp.detach(), logp)
        else:
            obj = objective_loss(objective, logp)
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
    return DeltaResult(
        delta=delta.detach().clone(), v0_norm=v0_norm, steps=steps, met=met,
        loss_first=history[0], loss_last=history[-1], objective_first=obj_hist[0], objective_last=obj_hist[-1],
        history=history,
    )
