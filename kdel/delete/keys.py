"""Keys for locate-then-edit methods (ROME, r-ROME, MEMIT, AlphaEdit): the k* side of ROME's compute_u.

* `edit_texts`: the texts an edit is computed on: each chosen training prompt of the fact, bare and after a
  few context prefixes. Prefixes are whole sentences drawn (seeded) from the training corpus, so every token
  is in the toy model's vocabulary (DESIGN §12; ROME's generated English prefixes would not be). For an
  objective with a noised subject (fact forcing) every text comes once per noise draw.
* `keys_at_site`: the input of the MLP output projection (the key) at the edit site of each text;
  `outputs_at_site`: a module's output there.
* `key_direction`: C⁻¹k, the input direction of a rank-one update (C = E[k kᵀ] over the corpus).
The value side (v*, the optimised output) is kdel.delete.values.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from kdel.delete.noise import NoiseSettings, RowNoise, noised_subjects, subject_noises
from kdel.models.hooks import record_inputs, record_outputs
from kdel.models.positions import site_position
from kdel.models.scoring import _pad_batch, _pad_id, encode_prompt


@dataclass
class EditText:
    text: str  # context prefix + prompt (the prompt alone when there is no prefix)
    site: int  # token index of the edit site in tok(text)
    canonical: bool  # the fact's canonical prompt (prompts[0]) without a prefix
    noise: RowNoise | None = None  # the subject's embedding noise (fact forcing), else None


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


def edit_texts(tokenizer, table, fact, site: str, n_prefixes: int, n_templates: int, seed: int,
               adapter=None, noise: NoiseSettings | None = None) -> list[EditText]:
    """The fact's first `n_templates` training prompts (0 = all), bare and after each context prefix; with
    `noise` (and the model's `adapter`), each text once per noise draw of the subject."""
    prompts = list(fact.prompts) if n_templates <= 0 else list(fact.prompts[:n_templates])
    prefixes = context_prefixes(table, fact, n_prefixes, seed)
    out = []
    for i, prompt in enumerate(prompts):
        for j, prefix in enumerate([""] + prefixes):
            text = prompt if not prefix else f"{prefix} {prompt}"
            pos = site_position(tokenizer, text, fact.subject, site)
            draws = subject_noises(adapter, tokenizer, text, fact, noise) if noise is not None else [None]
            out.extend(EditText(text, pos, i == 0 and j == 0, d) for d in draws)
    return out


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
        out.append(EditText(p, site_position(tokenizer, p, fact.subject, site), False))
        if len(out) >= n:
            break
    return out


def _batch(adapter, tokenizer, items: list[EditText]):
    ids = [encode_prompt(tokenizer, it.text) for it in items]
    input_ids, mask = _pad_batch(ids, _pad_id(tokenizer), adapter.device)
    rows = torch.arange(len(items), device=input_ids.device)
    pos = torch.tensor([it.site for it in items], device=input_ids.device)
    return input_ids, mask, rows, pos


@torch.no_grad()
def keys_at_site(adapter, tokenizer, layer: int, items: list[EditText]) -> torch.Tensor:
    """(n, d_mlp) float64: the key (input of layer's MLP output projection) at each item's edit site."""
    input_ids, mask, rows, pos = _batch(adapter, tokenizer, items)
    with record_inputs({"k": adapter.mlp_out(layer)}) as store, noised_subjects(adapter, [it.noise for it in items]):
        adapter.model(input_ids=input_ids, attention_mask=mask)
    return store["k"][rows, pos].double()


@torch.no_grad()
def outputs_at_site(adapter, tokenizer, module, items: list[EditText]) -> torch.Tensor:
    """(n, d_model) float64: `module`'s hidden-state output at each item's edit site."""
    input_ids, mask, rows, pos = _batch(adapter, tokenizer, items)
    with record_outputs({"m": module}) as store, noised_subjects(adapter, [it.noise for it in items]):
        adapter.model(input_ids=input_ids, attention_mask=mask)
    return store["m"][rows, pos].double()


def fact_keys(adapter, tokenizer, layer: int, items: list[EditText]) -> tuple[torch.Tensor, torch.Tensor]:
    """(k_avg, k_canonical) on CPU, float64: the mean key over the edit texts, and over the canonical bare
    prompt's texts (one text; one per noise draw under a noised subject)."""
    keys = keys_at_site(adapter, tokenizer, layer, items).cpu()
    canonical = torch.tensor([it.canonical for it in items])
    return keys.mean(dim=0), keys[canonical].mean(dim=0)


def key_direction(C: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """u = C⁻¹ k (float64 solve)."""
    return torch.linalg.solve(C.double(), key.double().to(C.device))
