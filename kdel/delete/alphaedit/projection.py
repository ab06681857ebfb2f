"""The null-space projection of AlphaEdit, computed once per (layer, corpus) and cached beside the key statistics.

K0 = the keys of the corpus at the layer (the preserved knowledge), C = K0K0ᵀ/n their second moment (the
key statistics kdel already computes, before any ridge). With C = U Λ Uᵀ, P = Û Ûᵀ over the eigenvectors
whose eigenvalue is below `threshold` · λ_max. For a preserved key k0, ||P k0||² <= n · Σ_{λ_i < τ} λ_i, so
an update of the form ΔW = Y P leaves the preserved keys' outputs (almost) unchanged.

Cache: in memory and, with a cache directory, as safetensors at
`cache_dir/keystats/<KeyStats.key>.null-<threshold>.safetensors` (the KeyStats key hashes the weights up to
the layer, the layer and the corpus, so a stale projection can never be reused).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from kdel.io import atomic_write_bytes

FORMAT = "kdel-nullspace/1"
_MEMORY: OrderedDict[str, NullSpace] = OrderedDict()
_MEMORY_SIZE = 16


@dataclass
class NullSpace:
    P: torch.Tensor  # (d_mlp, d_mlp) float64 on CPU
    rank: int  # dimension of the null space (eigenvalues below the threshold)
    threshold: float
    largest_eigenvalue: float
    cache_hit: str  # "memory", "disk" or "none"

    def info(self) -> dict:
        return {"nullspace_dim": self.rank, "nullspace_threshold": self.threshold,
                "preserved_largest_eigenvalue": self.largest_eigenvalue, "nullspace_cache": self.cache_hit}


def null_space_projection(C: torch.Tensor, threshold: float) -> tuple[torch.Tensor, int, float]:
    """(P, null-space dimension, λ_max) of a second-moment matrix C (float64)."""
    evals, evecs = torch.linalg.eigh(C.double())
    lam_max = float(evals[-1]) if evals.numel() else 0.0
    small = evals <= threshold * lam_max if lam_max > 0 else torch.ones_like(evals, dtype=torch.bool)
    U = evecs[:, small]
    return U @ U.T, int(small.sum()), lam_max


def _path(cache_dir, key: str, threshold: float) -> Path:
    return Path(cache_dir) / "keystats" / f"{key}.null-{threshold:.6g}.safetensors"


def _load(path: Path, threshold: float):
    from safetensors import safe_open

    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT or float(meta["threshold"]) != threshold:
                return None
            return f.get_tensor("P").double(), int(meta["rank"]), float(meta["largest_eigenvalue"])
    except Exception:  # noqa: BLE001 - a broken cache file is recomputed, never trusted
        return None


def preserved_null_space(stats, threshold: float, cache_dir=None) -> NullSpace:
    """The projection for the preserved keys of `stats` (a KeyStats), cached by its key and the threshold."""
    mem_key = f"{stats.key}|{threshold!r}"
    if mem_key in _MEMORY:
        _MEMORY.move_to_end(mem_key)
        ns = _MEMORY[mem_key]
        return NullSpace(ns.P, ns.rank, ns.threshold, ns.largest_eigenvalue, "memory")
    hit = "none"
    loaded = _load(_path(cache_dir, stats.key, threshold), threshold) if cache_dir is not None else None
    if loaded is not None:
        P, rank, lam = loaded
        hit = "disk"
    else:
        raw = stats.C - stats.ridge * torch.eye(stats.C.shape[0], dtype=stats.C.dtype)  # K0K0ᵀ/n, before any ridge
        P, rank, lam = null_space_projection(raw, threshold)
        if cache_dir is not None:
            from safetensors.torch import save

            meta = {"format": FORMAT, "threshold": repr(threshold), "rank": str(rank), "largest_eigenvalue": repr(lam),
                    "key": stats.key}
            atomic_write_bytes(_path(cache_dir, stats.key, threshold), save({"P": P.contiguous()}, metadata=meta))
    ns = NullSpace(P, rank, threshold, lam, hit)
    _MEMORY[mem_key] = ns
    while len(_MEMORY) > _MEMORY_SIZE:
        _MEMORY.popitem(last=False)
    return ns


def clear_memory_cache() -> None:
    _MEMORY.clear()
