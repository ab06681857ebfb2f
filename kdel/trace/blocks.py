"""Calling a model's transformer blocks directly, on some positions only, with cached keys/values.

A resumed run calls block l on the hidden states of a few positions per row; the block's attention must see
the keys/values of the earlier positions (cached from a recorded run), the rows' own position ids and rotary
embeddings, and an explicit mask. Blocks take their key/value cache as an argument (`cache`, `layer_past`,
...) and only call its `update(key, value, layer_idx)`: the stand-ins below answer that call.
"""

from __future__ import annotations

import functools
import inspect

import torch

CACHE_NAMES = ("cache", "past_key_values", "layer_past", "past_key_value")


@functools.lru_cache(maxsize=64)
def _signature(block_type: type) -> inspect.Signature:
    return inspect.signature(block_type.forward)


def cache_name(block) -> str | None:
    """The name of a block's key/value cache argument (None: the block takes no cache)."""
    params = _signature(type(block)).parameters
    return next((n for n in CACHE_NAMES if n in params), None)


def bind_call(block, args: tuple, kwargs: dict) -> dict:
    """A block call's arguments by name (the hidden state first)."""
    sig = _signature(type(block))
    out = dict(sig.bind_partial(block, *args, **kwargs).arguments)
    out.pop(next(iter(sig.parameters)), None)  # self
    out.update(out.pop("kwargs", {}) or {})
    return out


class RecordKV:
    """Records each layer's new keys/values (rows, heads, T, head_dim); attends to `prefix(layer)` + them."""

    def __init__(self, prefix=None):
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.prefix = prefix

    def update(self, key, value, layer_idx, *args, **kwargs):
        self.kv[layer_idx] = (key.detach(), value.detach())
        if self.prefix is None:
            return key, value
        pk, pv = self.prefix(layer_idx)
        return torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2)


class FixedKV:
    """Attention reads these keys/values (the new ones are known to equal them)."""

    def __init__(self, key, value):
        self.key, self.value = key, value

    def update(self, key, value, layer_idx, *args, **kwargs):
        return self.key, self.value


class PrefixKV:
    """Attention reads `prefix(layer)` (keys/values of earlier positions) followed by the new ones."""

    def __init__(self, prefix):
        self.prefix = prefix

    def update(self, key, value, layer_idx, *args, **kwargs):
        pk, pv = self.prefix(layer_idx)
        return torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2)


def kv_rows(kv: tuple[torch.Tensor, torch.Tensor], rows: torch.Tensor, length: int | None = None):
    """Recorded keys/values (rows, heads, T, head_dim) of some rows, cut to the first `length` positions."""
    if length is not None:
        kv = tuple(x[:, :, :length].contiguous() for x in kv)
    return tuple(x.index_select(0, rows) for x in kv)


def additive_mask(allowed: torch.Tensor, dtype) -> torch.Tensor:
    """(rows, q, k) booleans -> an additive (rows, 1, q, k) attention mask."""
    out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return out.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def causal_mask(prefix: int, n: int, dtype, device) -> torch.Tensor:
    """Additive (1, 1, n, prefix + n) mask: queries at positions prefix..prefix+n-1 see every earlier key."""
    allowed = torch.ones((n, prefix + n), dtype=torch.bool, device=device).tril(prefix)
    return additive_mask(allowed[None], dtype)


def call_kwargs(template: dict, positions: torch.Tensor, mask: torch.Tensor) -> dict:
    """A block call (from a recorded one) for per-row query positions (rows, q) with an explicit mask."""
    call = dict(template)
    if "position_ids" in call:
        call["position_ids"] = positions
    if "cache_position" in call:
        call["cache_position"] = None
    pe = call.get("position_embeddings")
    if isinstance(pe, tuple):  # rotary (cos, sin), each (batch, T, dim) and equal across the batch
        call["position_embeddings"] = tuple(x[0][positions] for x in pe)
    call["attention_mask"] = mask
    return call


class _Stop(Exception):
    pass


@torch.no_grad()
def block0_inputs(adapter, ids: torch.Tensor, embed_hook=None) -> torch.Tensor:
    """The input of the first block for token ids (rows, T): the model's own embedding stage (token and
    position embeddings, scaling), with `embed_hook` on the token embedding; no block runs."""
    box = {}

    def stop(_m, args, kwargs):
        box["h"] = kwargs.get("hidden_states", args[0] if args else None)
        raise _Stop

    handles = [adapter.layer(0).register_forward_pre_hook(stop, with_kwargs=True)]
    if embed_hook is not None:
        handles.append(adapter.embed.register_forward_hook(embed_hook))
    try:
        adapter.model(input_ids=ids, use_cache=False)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return box["h"]
