"""Key statistics C = E[k kᵀ] for ROME/MEMIT (DESIGN §6, §12).

k is the input of the MLP output projection of one layer (the `key`), taken at every token of a corpus
(the KG's training text, or the facts' prompts when nothing better is known: thin, and the caller warns).
C is uncentred, accumulated in float64 over right-padded batches (padding never counted).

Caching: on disk under `cache_dir/keystats/` and in memory, keyed by
  * a hash of the weights that determine the key at this layer (embeddings and every block up to and
    including this one, without this layer's MLP output projection and nothing above it) — the weights,
    never the model's name, so a retrained model can never reuse stale statistics, while an edit of this
    layer's output projection (or of a later layer) keeps its statistics valid;
  * the layer index;
  * a hash of the corpus' token ids (which covers both the text and the tokenizer).
Files are safetensors (no pickles), written atomically.

Regularisation: C + λ·tr(C)/d·I when the corpus has fewer tokens than C has dimensions or when C's
condition number exceeds `max_condition`. Token count and condition numbers are reported in `KeyStats`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from kdel.io import atomic_write_bytes
from kdel.models.hooks import record_inputs
from kdel.models.scoring import _pad_batch, _pad_id

CACHE_FORMAT = "kdel-keystats/1"
_MEMORY: OrderedDict[str, tuple[torch.Tensor, int]] = OrderedDict()
_MEMORY_SIZE = 16


class ThinCorpusWarning(UserWarning):
    """Key statistics come from the facts' own prompts only (no training corpus was given)."""


@dataclass
class KeyStats:
    """C (regularised if needed, float64, on CPU) and how it was obtained."""

    C: torch.Tensor
    layer: int
    tokens: int
    condition: float  # of the raw C
    condition_used: float  # of the C actually used (after the ridge, if any)
    ridge: float  # the added multiple of the identity (0 when none)
    thin_corpus: bool
    cache_hit: str  # "memory", "disk" or "none"
    key: str

    def info(self) -> dict:
        return {
            "cov_layer": self.layer,
            "cov_tokens": self.tokens,
            "cov_condition": self.condition,
            "cov_condition_used": self.condition_used,
            "cov_ridge": self.ridge,
            "cov_thin_corpus": self.thin_corpus,
            "cov_cache": self.cache_hit,
        }


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes()


def key_weights_hash(adapter, layer: int) -> str:
    """sha256 of every parameter the key of `layer` depends on (name, dtype, shape and bytes)."""
    arch = adapter.arch
    later = tuple(arch.layer.format(j) + "." for j in range(layer + 1, adapter.n_layers))
    own_out = arch.mlp_out.format(layer) + "."
    skip = later + (own_out, arch.final_norm + ".", arch.unembed + ".")
    h = hashlib.sha256()
    for name, p in adapter.model.named_parameters():
        if name.startswith(skip):
            continue
        h.update(f"{name}|{p.dtype}|{tuple(p.shape)}\n".encode())
        h.update(_tensor_bytes(p))
    return h.hexdigest()


def corpus_token_ids(tokenizer, lines: list[str]) -> list[list[int]]:
    return [list(tokenizer(line)["input_ids"]) for line in lines if line.strip()]


def corpus_hash(ids: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(ids, separators=(",", ":")).encode()).hexdigest()


@torch.no_grad()
def collect_second_moment(adapter, tokenizer, ids: list[list[int]], layer: int, batch_size: int = 64):
    """(sum of k kᵀ over every token, float64 on CPU; number of tokens)."""
    model = adapter.model
    device = adapter.device
    module = adapter.mlp_out(layer)
    d = adapter.d_mlp(layer)
    total = torch.zeros((d, d), dtype=torch.float64, device=device)
    count = 0
    pad = _pad_id(tokenizer)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), batch_size):
        chunk = [ids[i] for i in order[start : start + batch_size]]
        input_ids, mask = _pad_batch(chunk, pad, device)
        with record_inputs({"k": module}) as store:
            model(input_ids=input_ids, attention_mask=mask)
        keys = store["k"][mask.bool()].double()
        total += keys.T @ keys
        count += int(keys.shape[0])
    return total.cpu(), count


def _condition(C: torch.Tensor) -> float:
    ev = torch.linalg.eigvalsh(C)
    lo, hi = float(ev[0]), float(ev[-1])
    if hi <= 0:
        return float("inf")
    return float("inf") if lo <= 0 else hi / lo


def _cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "keystats" / f"{key}.safetensors"


def _load_disk(path: Path) -> tuple[torch.Tensor, int] | None:
    from safetensors import safe_open

    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != CACHE_FORMAT:
                return None
            return f.get_tensor("C").double(), int(meta["tokens"])
    except Exception:  # noqa: BLE001 - a broken cache file is recomputed, never trusted
        return None


def _save_disk(path: Path, C: torch.Tensor, tokens: int, key: str) -> None:
    from safetensors.torch import save

    data = save({"C": C.contiguous()}, metadata={"format": CACHE_FORMAT, "tokens": str(tokens), "key": key})
    atomic_write_bytes(path, data)


def key_statistics(
    adapter,
    tokenizer,
    table,
    layer: int,
    cache_dir: str | Path | None = None,
    ridge: float = 0.01,
    max_condition: float = 1e6,
    batch_size: int = 64,
) -> KeyStats:
    """C = E[k kᵀ] at `layer` over the table's training corpus (cached), regularised when needed."""
    thin = not table.corpus
    if thin:
        warnings.warn(
            "key statistics come from the facts' own prompts only (no training corpus given: pass --corpus); "
            "C is thin",
            ThinCorpusWarning,
            stacklevel=2,
        )
    ids = corpus_token_ids(tokenizer, table.training_prompts())
    key = f"{key_weights_hash(adapter, layer)[:24]}-L{layer}-{corpus_hash(ids)[:24]}"
    hit = "none"
    if key in _MEMORY:
        _MEMORY.move_to_end(key)
        raw, tokens = _MEMORY[key]
        hit = "memory"
    else:
        loaded = _load_disk(_cache_path(cache_dir, key)) if cache_dir is not None else None
        if loaded is not None:
            raw, tokens = loaded
            hit = "disk"
        else:
            total, tokens = collect_second_moment(adapter, tokenizer, ids, layer, batch_size)
            raw = total / max(tokens, 1)
            if cache_dir is not None:
                _save_disk(_cache_path(cache_dir, key), raw, tokens, key)
        _MEMORY[key] = (raw, tokens)
        while len(_MEMORY) > _MEMORY_SIZE:
            _MEMORY.popitem(last=False)
    d = raw.shape[0]
    cond = _condition(raw)
    lam = 0.0
    C = raw
    if tokens < d or not cond < max_condition:
        lam = ridge * float(torch.trace(raw)) / d
        if lam <= 0:  # an all-zero C (nothing to learn from): the identity keeps the algebra defined
            lam = 1.0
        C = raw + lam * torch.eye(d, dtype=raw.dtype)
    cond_used = _condition(C) if lam else cond
    return KeyStats(C=C, layer=layer, tokens=tokens, condition=cond, condition_used=cond_used, ridge=lam,
                    thin_corpus=thin, cache_hit=hit, key=key)


def clear_memory_cache() -> None:
    _MEMORY.clear()
