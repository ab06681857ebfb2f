"""Shared helpers (no tests) for the ROME/r-ROME/MEMIT tests: a fact table over conftest.SENTENCES and a
tiny random model trained for a few seconds until it recalls them (so erasing has something to remove)."""

from __future__ import annotations

import functools
import hashlib

import torch

from kdel.facts import Fact, FactTable
from tests.conftest import SENTENCES, build_random_model

FACTS = [
    Fact(0, "Maria Lopez", "John Smith", "works_with", ("Maria Lopez works with",)),
    Fact(1, "Maria Lopez", "Paris", "lives_in", ("Maria Lopez lives in",)),
    Fact(2, "John Smith", "Ann Lee", "colleague_of", ("John Smith is a colleague of",)),
    Fact(3, "Ann Lee", "Rome", "born_in", ("Ann Lee was born in",)),
    Fact(4, "Peter Pan", "London", "capital_of", ("the capital city of Peter Pan is",)),
]


def sentence_table(corpus: bool = True) -> FactTable:
    return FactTable(list(FACTS), "facts", "sentences", corpus=list(SENTENCES) if corpus else None)


@functools.lru_cache(maxsize=None)
def _memorized_state(family: str, n_layers: int, d_model: int):
    model, tok = build_random_model(family, n_layers=n_layers, d_model=d_model, seed=0)
    ids = [tok(s)["input_ids"] + [tok.eos_token_id] for s in SENTENCES]
    width = max(map(len, ids))
    x = torch.full((len(ids), width), tok.pad_token_id)
    labels = torch.full((len(ids), width), -100)
    for i, s in enumerate(ids):
        x[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = torch.tensor(s)
    mask = (labels != -100).long()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(150):
        loss = model(input_ids=x, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def memorized_model(family: str = "gpt2", n_layers: int = 3, d_model: int = 32):
    """(model, tokenizer) of `family` that recalls every fact of FACTS (fresh copy each call)."""
    model, tok = build_random_model(family, n_layers=n_layers, d_model=d_model, seed=0)
    model.load_state_dict(_memorized_state(family, n_layers, d_model))
    model.eval()
    return model, tok


def weights_hash(model) -> str:
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
