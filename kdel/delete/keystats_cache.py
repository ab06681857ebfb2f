"""Where key statistics are kept between runs: cache keys, an in-memory LRU and safetensors files on disk.

A key names (weights that determine the key at a layer, the layer, the corpus' token ids):
  * the weights: embeddings and every block up to and including the layer, without the layer's own MLP output
    projection, final norm and unembedding — the weights, never the model's name, so a retrained model never
    reuses stale statistics, while an edit of this layer's output projection (or of a later layer) keeps
    them valid;
  * the layer index;
  * a hash of the corpus' token ids (covering both the text and the tokenizer).
The hashes of several layers come from one sweep over the parameters (`key_weights_hashes`): layers share
the hash state of the parameters they have in common, so hashing every layer of a model costs about one
pass over its bytes, not one per layer.
Cached entries keep the raw C's extreme eigenvalues, so a cache hit never re-runs an eigendecomposition.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from kdel.io import atomic_write_bytes

CACHE_FORMAT = "kdel-keystats/1"
MEMORY_ENTRIES = 16
MEMORY_BYTES = int(os.environ.get("KDEL_KEYSTATS_MEMORY_MB", "2048")) << 20


@dataclass
class Entry:
    raw: torch.Tensor  # E[k kᵀ], float64 on CPU
    tokens: int
    eig_min: float
    eig_max: float


_MEMORY: OrderedDict[str, Entry] = OrderedDict()


def _tensor_buffer(t: torch.Tensor):
    """The tensor's bytes as a buffer (no copy for a contiguous CPU tensor)."""
    return t.detach().to("cpu").contiguous().view(torch.uint8).numpy()


def _skip_prefixes(adapter, layer: int) -> tuple[str, ...]:
    arch = adapter.arch
    later = tuple(arch.layer.format(j) + "." for j in range(layer + 1, adapter.n_layers))
    return later + (arch.mlp_out.format(layer) + ".", arch.final_norm + ".", arch.unembed + ".")


def key_weights_hashes(adapter, layers) -> dict[int, str]:
    """sha256 of every parameter the key of each layer depends on (name, dtype, shape and bytes, in
    `named_parameters` order), for all `layers` in one sweep."""
    layers = sorted(set(int(layer) for layer in layers))
    skips = {layer: _skip_prefixes(adapter, layer) for layer in layers}
    groups: list[tuple[hashlib._Hash, list[int]]] = [(hashlib.sha256(), layers)] if layers else []
    for name, p in adapter.model.named_parameters():
        header = f"{name}|{p.dtype}|{tuple(p.shape)}\n".encode()
        data = None
        regrouped = []
        for h, members in groups:
            inc = [layer for layer in members if not name.startswith(skips[layer])]
            exc = [layer for layer in members if name.startswith(skips[layer])]
            if exc:  # these layers' hashes diverge here: they continue from the state before this parameter
                regrouped.append((h.copy() if inc else h, exc))
            if inc:
                if data is None:
                    data = _tensor_buffer(p)
                h.update(header)
                h.update(data)
                regrouped.append((h, inc))
        groups = regrouped
    return {layer: h.hexdigest() for h, members in groups for layer in members}


def key_weights_hash(adapter, layer: int) -> str:
    return key_weights_hashes(adapter, [layer])[layer]


def corpus_hash(ids: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(ids, separators=(",", ":")).encode()).hexdigest()


def cache_key(weights_hash: str, layer: int, ids_hash: str) -> str:
    return f"{weights_hash[:24]}-L{layer}-{ids_hash[:24]}"


def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / "keystats" / f"{key}.safetensors"


def extreme_eigenvalues(raw: torch.Tensor) -> tuple[float, float]:
    ev = torch.linalg.eigvalsh(raw)
    return float(ev[0]), float(ev[-1])


def load_disk(path: Path) -> Entry | None:
    from safetensors import safe_open

    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != CACHE_FORMAT:
                return None
            raw = f.get_tensor("C").double()
            tokens = int(meta["tokens"])
            eig = (float(meta["eig_min"]), float(meta["eig_max"])) if "eig_min" in meta else None
    except Exception:  # noqa: BLE001 - a broken cache file is recomputed, never trusted
        return None
    lo, hi = eig if eig is not None else extreme_eigenvalues(raw)  # files written before the eigenvalues were kept
    return Entry(raw, tokens, lo, hi)


def save_disk(path: Path, entry: Entry, key: str) -> None:
    from safetensors.torch import save

    meta = {"format": CACHE_FORMAT, "tokens": str(entry.tokens), "key": key,
            "eig_min": repr(entry.eig_min), "eig_max": repr(entry.eig_max)}
    atomic_write_bytes(path, save({"C": entry.raw.contiguous()}, metadata=meta))


def memory_get(key: str) -> Entry | None:
    entry = _MEMORY.get(key)
    if entry is not None:
        _MEMORY.move_to_end(key)
    return entry


def memory_put(key: str, entry: Entry) -> None:
    """Keep `entry`; drop the least recently used entries beyond MEMORY_ENTRIES or MEMORY_BYTES."""
    _MEMORY[key] = entry
    _MEMORY.move_to_end(key)
    size = lambda: sum(e.raw.numel() * e.raw.element_size() for e in _MEMORY.values())  # noqa: E731
    while len(_MEMORY) > 1 and (len(_MEMORY) > MEMORY_ENTRIES or size() > MEMORY_BYTES):
        _MEMORY.popitem(last=False)


def clear_memory_cache() -> None:
    _MEMORY.clear()
