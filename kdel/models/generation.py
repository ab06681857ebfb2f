"""Token-by-token generation with the model's key/value cache: greedy (fluency checks) and seeded sampling
(`self:N` corpora). Rows of one call share a length, so no padding and no position bookkeeping is needed;
callers group prompts by token length.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch


def max_positions(model) -> int | None:
    """The model's context length (None when its config does not say)."""
    cfg = model.config
    for attr in ("n_positions", "max_position_embeddings"):
        v = getattr(cfg, attr, None)
        if v:
            return int(v)
    return None


def _forward_kwargs(model) -> tuple[str, bool]:
    """(the forward's name for the key/value cache, whether it takes `logits_to_keep`)."""
    params = inspect.signature(model.forward).parameters
    name = "cache" if "cache" in params else "past_key_values"
    return name, "logits_to_keep" in params


def _returned_cache(out):
    for name in ("cache", "past_key_values"):
        value = out.get(name) if hasattr(out, "get") else getattr(out, name, None)
        if value is not None:
            return value
    return None


@torch.no_grad()
def extend(model, ids: torch.Tensor, steps: int, choose: Callable[[torch.Tensor], torch.Tensor],
           stop_at: int | None = None) -> torch.Tensor:
    """Append `steps` tokens to every row of `ids` (B, T), each picked by `choose(last logits (B, V)) -> (B,)`.

    Returns the new tokens only, (B, ≤ steps): fewer when `stop_at` is given and every row has produced it.
    The prompt is run once; later steps feed one token with the cache.
    """
    cache_name, keep = _forward_kwargs(model)
    extra = {"logits_to_keep": 1} if keep else {}
    device = next(model.parameters()).device
    ids = ids.to(device)
    new = []
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=device)
    out = model(input_ids=ids, use_cache=True, **extra)
    for step in range(steps):
        nxt = choose(out.logits[:, -1, :].float()).to(device)
        new.append(nxt)
        if stop_at is not None:
            done |= nxt == stop_at
        if step + 1 == steps or bool(done.all()):
            break
        cache = _returned_cache(out)
        if cache is None:  # no cache support: rerun the whole prefix
            ids = torch.cat([ids, torch.stack(new, 1)[:, -1:]], dim=1)
            out = model(input_ids=ids, use_cache=False, **extra)
        else:
            out = model(input_ids=nxt[:, None], use_cache=True, **{cache_name: cache}, **extra)
    if not new:
        return torch.zeros((ids.shape[0], 0), dtype=torch.long)
    return torch.stack(new, dim=1).cpu()


def greedy(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=-1)


def sampler(generator: torch.Generator, temperature: float = 1.0,
            banned: list[int] = ()) -> Callable[[torch.Tensor], torch.Tensor]:
    """Sampling from softmax(logits / temperature) over the whole vocabulary but `banned` (no top-k, no
    nucleus), drawn on the CPU from `generator`, so a seed gives the same tokens on any device."""
    banned = torch.tensor(sorted(set(banned)), dtype=torch.long)

    def choose(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.detach().to("cpu", torch.float64) / temperature
        if len(banned):
            logits[:, banned[banned < logits.shape[-1]]] = float("-inf")
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, 1, generator=generator)[:, 0]

    return choose


def room(model, prompt_len: int, wanted: int) -> int:
    """How many tokens can follow a prompt of `prompt_len` tokens within the context (at most `wanted`)."""
    limit = max_positions(model)
    return wanted if limit is None else max(0, min(wanted, limit - prompt_len))
