"""Activation patching: ROME's per-site reference loop and an exact batched tracer (DESIGN §5, §12).

A *site* is (component, layers, positions): the hidden-state output of that component (resid = block
output, mlp, attn) at those layers and positions is replaced by the *source* run's, inside the *base* run.
Denoising: base = corrupted run, source = clean run. Noising: base = clean run, source = corrupted run.
With Gaussian noise, every site is evaluated on `n_samples` rows (one per noise draw: row s uses draw s
of whichever run is noised), and its value is the mean of the per-row metrics.

- `trace_loop`: the baseline. One full forward pass per site, the noise samples as the batch (ROME's scheme).
- `trace_batched`: the same numbers with far less work, exactly:
  * resume in depth: a patch at layer l cannot change anything below l, so patched rows start from the base
    run's cached input of block l (captured with the block's call arguments) and only run blocks l..L-1;
  * resume in time: a patch at position t cannot change positions before t (causal attention), so patched
    rows compute positions t..T-1 only, attending to the base run's cached keys/values of positions < t
    (a prefix key/value cache handed to each block, with an explicit causal mask);
  * batch: all sites that start at the same layer run as one batch (chunked to a memory budget) from the
    earliest position any of them needs; the patches are index writes into the component outputs;
  * skip: a site whose patch provably cannot reach the last position's logits gets the base run's value
    without a forward pass: positions before the first subject token (the clean and corrupted runs are
    identical there) and, at the last layer, positions other than the last.
  Only the last position goes through the final norm and the unembedding.
"""

from __future__ import annotations

import functools
import inspect
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from kdel.models.adapter import ModelAdapter, first_tensor, with_first_tensor
from kdel.models.hooks import edit_output, record_outputs
from kdel.trace.corrupt import Corruption, RunInput
from kdel.trace.metrics import mean_metrics, row_metrics

COMPONENTS = ("resid", "mlp", "attn")
DIRECTIONS = ("denoise", "noise")


@dataclass(frozen=True)
class Site:
    component: str
    layers: tuple[int, ...]
    positions: tuple[int, ...]


def window_layers(layer: int, window: int, n_layers: int) -> tuple[int, ...]:
    """ROME's window: `window` consecutive layers starting at layer - window // 2, clipped to the model."""
    lo = layer - window // 2
    return tuple(range(max(0, lo), min(n_layers, lo + window)))


@dataclass
class RecordedRun:
    acts: dict[tuple[str, int], torch.Tensor]  # (component, layer) -> (rows, T, d) hidden-state output
    block_inputs: list[torch.Tensor]  # layer -> (rows, T, d) input of the block
    block_call: dict  # keyword arguments of a block call (hidden state and cache excluded)
    logits: torch.Tensor  # (rows, vocab) at the last position
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # layer -> (keys, values)


@dataclass
class TraceSetup:
    """Everything a patched run needs for one fact, computed once (two recorded forward passes)."""

    adapter: ModelAdapter
    direction: str
    base: RunInput
    base_run: RecordedRun
    source_run: RecordedRun
    target_id: int
    alt_id: int
    clean_logprobs: torch.Tensor
    clean: dict[str, float]
    corrupted: dict[str, float]
    n_rows: int  # rows per site
    first_changed: int  # first position where the clean and corrupted inputs differ
    base_metrics: dict[str, float] = field(default_factory=dict)

    def base_row(self, s: int) -> int:
        return s if self.base.n_rows > 1 else 0

    def source_row(self, s: int) -> int:
        return s if self.source_run.logits.shape[0] > 1 else 0


def _noise_hook(noise: torch.Tensor, positions: list[int]):
    """Forward hook for the token embedding: adds noise[row] at the subject positions."""
    pos = torch.tensor(positions, device=noise.device)

    def hook(_m, _inp, out):
        out = out.clone()
        out[:, pos] = out[:, pos] + noise
        return out

    return hook


def _ids_tensor(run: RunInput, rows: int, device) -> torch.Tensor:
    return torch.tensor([run.ids], dtype=torch.long, device=device).expand(rows, -1).contiguous()


def _noise_rows(adapter: ModelAdapter, run: RunInput, rows: list[int] | None = None) -> torch.Tensor | None:
    if run.noise is None:
        return None
    w = adapter.embedding_matrix()
    noise = run.noise if rows is None else run.noise[rows]
    return noise.to(device=w.device, dtype=w.dtype)


_CACHE_NAMES = ("cache", "past_key_values", "layer_past", "past_key_value")


class _RecordKV:
    """A stand-in key/value cache that records each layer's keys and values and attends to them only."""

    def __init__(self):
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, key, value, layer_idx, *args, **kwargs):
        self.kv[layer_idx] = (key.detach(), value.detach())
        return key, value


class _PrefixKV:
    """A stand-in key/value cache holding fixed keys/values of earlier positions for each layer."""

    def __init__(self, prefix: dict[int, tuple[torch.Tensor, torch.Tensor]]):
        self.prefix = prefix

    def update(self, key, value, layer_idx, *args, **kwargs):
        pk, pv = self.prefix[layer_idx]
        return torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2)


@functools.lru_cache(maxsize=64)
def _signature(block_type: type) -> inspect.Signature:
    return inspect.signature(block_type.forward)


def _cache_name(block) -> str | None:
    params = _signature(type(block)).parameters
    return next((n for n in _CACHE_NAMES if n in params), None)


def _bind(block, args: tuple, kwargs: dict) -> dict:
    """A block call's arguments by name (the hidden state first)."""
    bound = _signature(type(block)).bind_partial(block, *args, **kwargs)
    out = dict(bound.arguments)
    out.pop(next(iter(_signature(type(block)).parameters)), None)  # self
    out.update(out.pop("kwargs", {}) or {})
    return out


@torch.no_grad()
def record_run(adapter: ModelAdapter, run: RunInput) -> RecordedRun:
    """Forward `run` (one row per noise sample), recording every component output, every block input and
    every layer's attention keys/values."""
    model = adapter.model
    modules = {(c, i): adapter.component(c, i) for c in COMPONENTS for i in range(adapter.n_layers)}
    names = {k: f"{k[0]}.{k[1]}" for k in modules}
    inputs: dict[int, torch.Tensor] = {}
    call: dict[str, dict] = {}
    recorder = _RecordKV()
    handles = []

    def pre(layer):
        block = adapter.layer(layer)
        cache_name = _cache_name(block)

        def hook(_m, args, kwargs):
            named = _bind(block, args, kwargs)
            hidden = named.pop("hidden_states", None)
            if hidden is None:
                hidden = args[0]
            inputs[layer] = hidden.detach()
            if cache_name is not None:
                named.pop(cache_name, None)
            if layer == 0:
                call["c"] = dict(named)
            if cache_name is None:
                return None
            named[cache_name] = recorder
            return (hidden,), named

        return hook

    for i in range(adapter.n_layers):
        handles.append(adapter.layer(i).register_forward_pre_hook(pre(i), with_kwargs=True))
    noise = _noise_rows(adapter, run)
    if noise is not None:
        handles.append(adapter.embed.register_forward_hook(_noise_hook(noise, run.subject_positions)))
    try:
        with record_outputs({names[k]: m for k, m in modules.items()}) as store:
            out = model(input_ids=_ids_tensor(run, run.n_rows, adapter.device), use_cache=False, logits_to_keep=1)
            acts = {k: store[names[k]] for k in modules}
    finally:
        for h in handles:
            h.remove()
    blocks_in = [inputs[i] for i in range(adapter.n_layers)]
    return RecordedRun(acts, blocks_in, call["c"], out.logits[:, -1], dict(recorder.kv))


def build_setup(adapter: ModelAdapter, corruption: Corruption, direction: str) -> TraceSetup:
    """Record the clean and corrupted runs and fix o' (gn: the corrupted run's top token other than o)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}")
    clean_run = record_run(adapter, corruption.clean)
    corrupted_run = record_run(adapter, corruption.corrupted)
    o = corruption.target_id
    alt = corruption.alt_id
    if alt is None:
        mean_p = torch.softmax(corrupted_run.logits.double(), -1).mean(0)
        mean_p[o] = -1.0
        alt = int(mean_p.argmax())
    clean_lp = torch.log_softmax(clean_run.logits[0].double(), -1)
    clean = mean_metrics(row_metrics(clean_run.logits, o, alt, clean_lp))
    corrupted = mean_metrics(row_metrics(corrupted_run.logits, o, alt, clean_lp))
    a, b = corruption.clean, corruption.corrupted
    differs = [i for i, (x, y) in enumerate(zip(a.ids, b.ids)) if x != y]
    first_changed = min(differs + list(b.subject_positions if b.noise is not None else []) + [len(a.ids)])
    if direction == "denoise":
        base, base_run, source_run = b, corrupted_run, clean_run
    else:
        base, base_run, source_run = a, clean_run, corrupted_run
    n_rows = max(base.n_rows, source_run.logits.shape[0])
    setup = TraceSetup(
        adapter, direction, base, base_run, source_run, o, alt, clean_lp, clean, corrupted, n_rows, first_changed
    )
    setup.base_metrics = corrupted if direction == "denoise" else clean
    return setup


def _site_metrics(setup: TraceSetup, logits: torch.Tensor) -> dict[str, float]:
    return mean_metrics(row_metrics(logits, setup.target_id, setup.alt_id, setup.clean_logprobs))


# -- the reference loop --------------------------------------------------------------------------------
@torch.no_grad()
def patched_run_loop(setup: TraceSetup, site: Site) -> dict[str, float]:
    """One full forward pass for one site, the noise samples as the batch (ROME's scheme)."""
    adapter = setup.adapter
    rows = setup.n_rows
    src_rows = [setup.source_row(s) for s in range(rows)]
    pos = list(site.positions)
    handles = []
    noise = _noise_rows(adapter, setup.base)
    if noise is not None:
        handles.append(adapter.embed.register_forward_hook(_noise_hook(noise, setup.base.subject_positions)))
    try:
        ctxs = []
        for layer in site.layers:
            src = setup.source_run.acts[(site.component, layer)][src_rows][:, pos]

            def fn(h, src=src):
                h = h.clone()
                h[:, pos] = src
                return h

            ctxs.append(edit_output(adapter.component(site.component, layer), fn))
        for c in ctxs:
            c.__enter__()
        try:
            ids = _ids_tensor(setup.base, rows, adapter.device)
            logits = adapter.model(input_ids=ids, use_cache=False).logits[:, -1]
        finally:
            for c in reversed(ctxs):
                c.__exit__(None, None, None)
    finally:
        for h in handles:
            h.remove()
    return _site_metrics(setup, logits)


def trace_loop(setup: TraceSetup, sites: list[Site]) -> list[dict[str, float]]:
    return [patched_run_loop(setup, s) for s in sites]


# -- the exact batched tracer ------------------------------------------------------------------------------
def is_noop(setup: TraceSetup, site: Site) -> bool:
    """True when the patch provably leaves the last position's logits as in the base run."""
    last = len(setup.base.ids) - 1
    n_layers = setup.adapter.n_layers
    return all(p < setup.first_changed or (layer == n_layers - 1 and p != last) for p in site.positions
               for layer in site.layers)


def _patch_hook(rows: torch.Tensor, pos: torch.Tensor, values: torch.Tensor):
    def hook(_m, _inp, out):
        h = first_tensor(out).clone()
        h[rows, pos] = values
        return with_first_tensor(out, h)

    return hook


def _suffix_call(setup: TraceSetup, start_pos: int, base_rows: torch.Tensor) -> tuple[dict, str | None]:
    """Block keyword arguments for computing positions start_pos..T-1 only (position tensors sliced,
    an explicit causal mask over [prefix + suffix] keys), and the name of the cache argument."""
    call = dict(setup.base_run.block_call)
    cache_name = _cache_name(setup.adapter.layer(0))
    if start_pos == 0:
        return call, cache_name
    T = len(setup.base.ids)
    for name in ("position_ids", "cache_position"):
        if torch.is_tensor(call.get(name)):
            call[name] = call[name][..., start_pos:]
    pe = call.get("position_embeddings")
    if isinstance(pe, tuple):
        call["position_embeddings"] = tuple(x[:, start_pos:] for x in pe)
    dtype = setup.base_run.block_inputs[0].dtype
    q = torch.arange(start_pos, T, device=base_rows.device)[:, None]
    k = torch.arange(T, device=base_rows.device)[None, :]
    mask = torch.zeros((T - start_pos, T), dtype=dtype, device=base_rows.device)
    mask.masked_fill_(k > q, torch.finfo(dtype).min)
    call["attention_mask"] = mask[None, None]
    return call, cache_name


def suffix_supported(setup: TraceSetup) -> bool:
    """Resuming in time needs a cache argument in every block and recorded keys/values of every layer."""
    n = setup.adapter.n_layers
    names = {_cache_name(setup.adapter.layer(i)) for i in range(n)}
    return None not in names and len(names) == 1 and all(i in setup.base_run.kv for i in range(n))


@torch.no_grad()
def _run_from(setup: TraceSetup, start: int, start_pos: int, sites: list[Site]) -> torch.Tensor:
    """Last-position logits of len(sites) * n_rows patched rows, resuming at block `start`, position `start_pos`."""
    adapter = setup.adapter
    n = setup.n_rows
    dev = adapter.device
    base_rows = torch.tensor([setup.base_row(s) for _ in sites for s in range(n)], device=dev)
    hidden = setup.base_run.block_inputs[start][base_rows][:, start_pos:]
    call, cache_name = _suffix_call(setup, start_pos, base_rows)
    if start_pos > 0:
        kv = setup.base_run.kv
        call[cache_name] = _PrefixKV({i: (kv[i][0][base_rows, :, :start_pos], kv[i][1][base_rows, :, :start_pos])
                                      for i in range(start, adapter.n_layers)})
    # index lists per (component, layer): patched row, position (relative to start_pos), source row
    index: dict[tuple[str, int], list[list[int]]] = defaultdict(lambda: [[], [], [], []])
    for k, site in enumerate(sites):
        for layer in site.layers:
            lists = index[(site.component, layer)]
            for s in range(n):
                for p in site.positions:
                    lists[0].append(k * n + s)
                    lists[1].append(p - start_pos)
                    lists[2].append(p)
                    lists[3].append(setup.source_row(s))
    handles = []
    try:
        for (comp, layer), (rows, rel, pos, srow) in index.items():
            t = lambda v: torch.tensor(v, device=dev)  # noqa: E731
            values = setup.source_run.acts[(comp, layer)][t(srow), t(pos)]
            hook = _patch_hook(t(rows), t(rel), values)
            handles.append(adapter.component(comp, layer).register_forward_hook(hook))
        for layer in range(start, adapter.n_layers):
            hidden = first_tensor(adapter.layer(layer)(hidden, **call))
    finally:
        for h in handles:
            h.remove()
    x = adapter.final_norm(hidden[:, -1:])
    return adapter.unembed(x)[:, -1]


def _chunk_size(setup: TraceSetup, budget_bytes: float = 2.0e8) -> int:
    """Sites per batch so that a batch's activations stay within a memory budget."""
    T = len(setup.base.ids)
    d = setup.adapter.d_model
    el = setup.base_run.block_inputs[0].element_size()
    per_row = T * d * el * 12  # hidden, MLP intermediate (4d) and attention temporaries
    return max(1, int(budget_bytes // (per_row * setup.n_rows)))


def trace_batched(
    setup: TraceSetup, sites: list[Site], max_sites_per_batch: int | None = None, resume_in_time: bool = True,
    merge_positions: bool = True,
) -> list[dict[str, float]]:
    """The same values as `trace_loop`, from resumed, batched forwards (see the module docstring)."""
    results: list[dict[str, float] | None] = [None] * len(sites)
    by_start: dict[tuple[int, int], list[int]] = defaultdict(list)
    in_time = resume_in_time and suffix_supported(setup)
    for k, site in enumerate(sites):
        if is_noop(setup, site):
            results[k] = dict(setup.base_metrics)
        else:
            by_start[(min(site.layers), min(site.positions) if in_time else 0)].append(k)
    if merge_positions:  # one batch per start layer, from the earliest position any of its sites needs
        merged: dict[tuple[int, int], list[int]] = defaultdict(list)
        first = {}
        for (layer, pos) in sorted(by_start):
            first.setdefault(layer, pos)
        for (layer, pos), ks in sorted(by_start.items()):
            merged[(layer, first[layer])].extend(ks)
        by_start = merged
    chunk = max_sites_per_batch or _chunk_size(setup)
    n = setup.n_rows
    for (start, start_pos), ks in sorted(by_start.items()):
        for i in range(0, len(ks), chunk):
            part = ks[i : i + chunk]
            logits = _run_from(setup, start, start_pos, [sites[k] for k in part])
            values = row_metrics(logits, setup.target_id, setup.alt_id, setup.clean_logprobs)
            for j, k in enumerate(part):
                results[k] = {m: float(np.mean(v[j * n : (j + 1) * n])) for m, v in values.items()}
    return results  # type: ignore[return-value]


def patched_metrics(setup: TraceSetup, sites: list[Site], batched: bool = True) -> list[dict[str, float]]:
    """Metric values of arbitrary sites (several layers and/or positions at once), batched or looped."""
    return trace_batched(setup, sites) if batched else trace_loop(setup, sites)
