"""Key statistics C = E[k kᵀ] for ROME/MEMIT (DESIGN §6, §12, §13).

k is the input of the MLP output projection of one layer (the `key`), taken at every token of a corpus
(kdel.delete.corpus: a --corpus file, `self:N` text sampled from the model, a KG's training text, or the facts'
prompts when nothing better is known: thin, with a warning). Held-out lines of the corpus are never used.
C is uncentred, accumulated in float64 over right-padded batches (padding never counted).

Scaling (§13): one pass serves every requested layer, and the forward stops as soon as the deepest requested
key is recorded (a hook raises; no later block, final norm or unembedding runs). The sums are updated inside
the hooks, so memory is the model + one d×d float64 sum per requested layer + one batch of activations.
Results are cached per layer (kdel.delete.keystats_cache), in memory and on disk.

Regularisation: C + λ·tr(C)/d·I when the corpus has fewer tokens than C has dimensions or when C's
condition number exceeds `max_condition`. Token count, condition numbers and the corpus' provenance are
reported in `KeyStats.info()`.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field

import torch

from kdel.delete.corpus import Corpus, corpus_of
from kdel.delete.keystats_cache import (  # noqa: F401 - re-exported: part of this module's API
    Entry,
    cache_key,
    cache_path,
    clear_memory_cache,
    corpus_hash,
    extreme_eigenvalues,
    key_weights_hash,
    key_weights_hashes,
    load_disk,
    memory_get,
    memory_put,
    save_disk,
)
from kdel.errors import UserError
from kdel.models.generation import max_positions
from kdel.models.scoring import _pad_batch, _pad_id

TOKENS_PER_DIM = 10  # warn below this many corpus tokens per key dimension
MAX_BATCH_TOKENS = 4096  # padded tokens per forward (bounds activation memory)


class ThinCorpusWarning(UserWarning):
    """Key statistics come from the facts' own prompts only (no training corpus was given)."""


class SmallCorpusWarning(UserWarning):
    """The corpus has fewer than TOKENS_PER_DIM tokens per key dimension: C is poorly estimated."""


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
    corpus: dict = field(default_factory=dict)  # Corpus.info(): source, spec, seed, sha256, line counts

    def info(self) -> dict:
        return {
            "cov_layer": self.layer,
            "cov_tokens": self.tokens,
            "cov_condition": self.condition,
            "cov_condition_used": self.condition_used,
            "cov_ridge": self.ridge,
            "cov_thin_corpus": self.thin_corpus,
            "cov_cache": self.cache_hit,
            "cov_corpus": dict(self.corpus),
        }


def corpus_token_ids(tokenizer, lines: list[str], max_len: int | None = None) -> list[list[int]]:
    """Token ids of each non-empty line (with the tokenizer's special tokens); a line longer than `max_len`
    tokens is cut into consecutive pieces of at most `max_len` (every token is kept)."""
    out = []
    for line in lines:
        if not line.strip():
            continue
        ids = list(tokenizer(line)["input_ids"])
        if max_len is None or len(ids) <= max_len:
            out.append(ids)
        else:
            out.extend(ids[i:i + max_len] for i in range(0, len(ids), max_len))
    return [ids for ids in out if ids]


_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _corpus_ids(tokenizer, corpus: Corpus, max_len: int) -> list[list[int]]:
    """`corpus_token_ids` of the corpus' key lines, memoised per tokenizer object (the latest corpus only):
    sequential edits ask for the same corpus at every step. Callers must not modify the returned lists."""
    try:
        memo = _IDS.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced
        return corpus_token_ids(tokenizer, corpus.key_lines(), max_len=max_len)
    key = (corpus.hash, corpus.heldout_every, max_len)
    if key not in memo:
        memo.clear()
        memo[key] = corpus_token_ids(tokenizer, corpus.key_lines(), max_len=max_len)
    return memo[key]


def _batches(ids: list[list[int]], batch_size: int, max_tokens: int):
    """Length-sorted batches of at most `batch_size` rows and `max_tokens` padded tokens (≥ 1 row each)."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    chunk: list[list[int]] = []
    for i in order:
        width = len(ids[i])  # sorted: the newest row is the widest
        if chunk and (len(chunk) >= batch_size or (len(chunk) + 1) * width > max_tokens):
            yield chunk
            chunk = []
        chunk.append(ids[i])
    if chunk:
        yield chunk


class _Enough(Exception):
    """Raised by the hook of the deepest requested key: nothing above it needs to run."""


@torch.no_grad()
def second_moments(adapter, ids: list[list[int]], layers, pad_id: int = 0, batch_size: int = 64,
                   max_batch_tokens: int = MAX_BATCH_TOKENS, stop_early: bool = True):
    """({layer: Σ k kᵀ over every real token, float64 on CPU}, number of tokens) in one streamed pass.

    `stop_early=False` runs the whole model each batch (the old path, kept for benchmarks and tests)."""
    layers = sorted(set(int(layer) for layer in layers))
    model, device = adapter.model, adapter.device
    deepest = layers[-1]
    totals = {layer: torch.zeros((adapter.d_mlp(layer),) * 2, dtype=torch.float64, device=device) for layer in layers}
    state: dict[str, torch.Tensor] = {}

    def hook_for(layer: int):
        def hook(_module, inputs):
            keys = inputs[0][state["mask"]].to(torch.float64)  # (real tokens, d)
            totals[layer].addmm_(keys.T, keys)
            if stop_early and layer == deepest:
                raise _Enough

        return hook

    handles = [adapter.mlp_out(layer).register_forward_pre_hook(hook_for(layer)) for layer in layers]
    count = 0
    was_training = model.training
    model.eval()
    try:
        for chunk in _batches(ids, batch_size, max_batch_tokens):
            input_ids, mask = _pad_batch(chunk, pad_id, device)
            state["mask"] = mask.bool()
            try:
                model(input_ids=input_ids, attention_mask=mask, use_cache=False)
            except _Enough:
                pass
            count += int(mask.sum())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {layer: t.cpu() for layer, t in totals.items()}, count


def collect_second_moment(adapter, tokenizer, ids: list[list[int]], layer: int, batch_size: int = 64):
    """(Σ k kᵀ over every token at one layer, float64 on CPU; number of tokens)."""
    totals, count = second_moments(adapter, ids, [layer], _pad_id(tokenizer), batch_size)
    return totals[layer], count


def _condition(lo: float, hi: float) -> float:
    if hi <= 0 or lo <= 0:
        return float("inf")
    return hi / lo


def _warn_corpus(corpus: Corpus, tokens: int, d: int) -> None:
    if corpus.thin:
        warnings.warn(
            f"key statistics come from the facts' own prompts only ({tokens} tokens; no training corpus given: "
            f"pass --corpus FILE or --corpus self:N); C is thin",
            ThinCorpusWarning, stacklevel=3)
    elif tokens < TOKENS_PER_DIM * d:
        warnings.warn(
            f"key statistics use {tokens} corpus tokens, fewer than {TOKENS_PER_DIM} x d = {TOKENS_PER_DIM * d} "
            f"(d = {d}, the key dimension): C is poorly estimated; pass a larger --corpus or "
            f"--corpus self:{TOKENS_PER_DIM * d}",
            SmallCorpusWarning, stacklevel=3)


def key_statistics_many(adapter, tokenizer, table, layers, cache_dir=None, ridge: float = 0.01,
                        max_condition: float = 1e6, batch_size: int = 64, max_batch_tokens: int = MAX_BATCH_TOKENS,
                        corpus: Corpus | None = None) -> dict[int, KeyStats]:
    """C = E[k kᵀ] at every layer of `layers` over the table's corpus (or `corpus`), regularised when needed.

    Cached layers are read back; all the others come from one pass that stops at the deepest of them."""
    layers = sorted(set(adapter._check_layer(int(layer)) for layer in layers))
    if not layers:
        return {}
    corpus = corpus if corpus is not None else corpus_of(table)
    limit = max_positions(adapter.model)
    ids = _corpus_ids(tokenizer, corpus, min(limit or 1024, 1024))
    n_tokens = sum(len(x) for x in ids)
    if n_tokens == 0:
        raise UserError(f"the corpus for key statistics ({corpus.spec}) has no tokens")
    _warn_corpus(corpus, n_tokens, max(adapter.d_mlp(layer) for layer in layers))
    ids_hash = corpus_hash(ids)
    weights = key_weights_hashes(adapter, layers)
    keys = {layer: cache_key(weights[layer], layer, ids_hash) for layer in layers}
    found: dict[int, tuple[Entry, str]] = {}
    for layer in layers:
        entry = memory_get(keys[layer])
        if entry is not None:
            found[layer] = (entry, "memory")
            continue
        entry = load_disk(cache_path(cache_dir, keys[layer])) if cache_dir is not None else None
        if entry is not None:
            memory_put(keys[layer], entry)
            found[layer] = (entry, "disk")
    missing = [layer for layer in layers if layer not in found]
    if missing:
        totals, count = second_moments(adapter, ids, missing, _pad_id(tokenizer), batch_size, max_batch_tokens)
        for layer in missing:
            raw = totals.pop(layer) / max(count, 1)
            entry = Entry(raw, count, *extreme_eigenvalues(raw))
            if cache_dir is not None:
                save_disk(cache_path(cache_dir, keys[layer]), entry, keys[layer])
            memory_put(keys[layer], entry)
            found[layer] = (entry, "none")
    info = {**corpus.info(), "tokens": n_tokens}
    return {layer: _regularised(found[layer][0], layer, found[layer][1], keys[layer], corpus.thin, info,
                                ridge, max_condition) for layer in layers}


def _regularised(entry: Entry, layer: int, hit: str, key: str, thin: bool, corpus_info: dict, ridge: float,
                 max_condition: float) -> KeyStats:
    raw = entry.raw
    d = raw.shape[0]
    cond = _condition(entry.eig_min, entry.eig_max)
    lam = 0.0
    C = raw
    if entry.tokens < d or not cond < max_condition:
        lam = ridge * float(torch.trace(raw)) / d
        if lam <= 0:  # an all-zero C (nothing to learn from): the identity keeps the algebra defined
            lam = 1.0
        C = raw + lam * torch.eye(d, dtype=raw.dtype)
    cond_used = _condition(entry.eig_min + lam, entry.eig_max + lam) if lam else cond
    return KeyStats(C=C, layer=layer, tokens=entry.tokens, condition=cond, condition_used=cond_used, ridge=lam,
                    thin_corpus=thin, cache_hit=hit, key=key, corpus=corpus_info)


def method_key_statistics(ctx, hp, layer: int) -> KeyStats:
    """C at `layer` for a rank-one / MEMIT-family method with hyperparameters `hp` (cov_ridge, max_condition,
    cov_batch_size): the context's pinned statistics when it has them for this layer, else computed (cached)
    on the model as it is now."""
    pinned = getattr(ctx, "pinned_key_stats", None)
    if pinned is not None and layer in pinned:
        return pinned[layer]
    return key_statistics(ctx.adapter, ctx.tokenizer, ctx.table, layer, ctx.cache_dir, ridge=hp.cov_ridge,
                          max_condition=hp.max_condition, batch_size=hp.cov_batch_size)


def key_statistics(adapter, tokenizer, table, layer: int, cache_dir=None, ridge: float = 0.01,
                   max_condition: float = 1e6, batch_size: int = 64, corpus: Corpus | None = None) -> KeyStats:
    """C = E[k kᵀ] at one layer (see `key_statistics_many`, which callers needing several layers should use)."""
    return key_statistics_many(adapter, tokenizer, table, [layer], cache_dir, ridge, max_condition, batch_size,
                               corpus=corpus)[layer]
