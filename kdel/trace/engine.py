"""The exact batched tracer: the per-site loop's numbers, for many facts at once, with far less work.

For a site whose first patched layer is l0 and whose positions are P (pmin = min P), exactly:
- *stage 1*: at layer l0 only the positions in P change (the block's input is the base run's, so its keys
  and values are too). Block l0 runs on the positions P alone, attending to the base run's cached keys and
  values of layer l0, with the patch applied; a resid site needs no compute at all (its block output at P
  is the source's).
- *stage 2*: layers l0+1 .. L-1 run on positions pmin .. T-1 only (a patch cannot reach earlier positions),
  attending to the base run's cached keys/values of positions < pmin; the input of layer l0+1 is the base
  run's, with stage 1's outputs at P. Windowed sites patch their later layers here.
- *last layer*: only the last position's output matters, so its MLP runs on the last position alone (the
  block adds it to the residual stream by broadcasting); only the last position is normed and unembedded.
- *skip*: sites that provably cannot change the last position's logits get the base run's value.
- *batch*: every site of every fact with the same l0, the same number of positions |P| and the same
  stage-2 length T - pmin runs in one batch (chunked to a token budget). Facts' prompts may differ in
  length: each row gets its own position ids, rotary embeddings, cached prefix (left-padded) and attention
  mask. Every cached tensor comes from the shared recordings of `build_setups`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from kdel.models.adapter import first_tensor, with_first_tensor
from kdel.trace.metrics import row_metrics
from kdel.trace.patch import Site, TraceSetup, is_noop
from kdel.trace.blocks import FixedKV, PrefixKV, additive_mask, cache_name, call_kwargs, causal_mask, kv_rows

SLICE_LAST_MLP = True  # the last layer's MLP on the last position only (exact; off only to measure it)


@dataclass
class _Item:
    job: int
    k: int  # site index within its job
    site: Site
    l0: int
    pmin: int
    length: int  # the fact's prompt length T; stage 2 computes positions pmin .. T-1


def _patch_hook(rows: torch.Tensor, pos: torch.Tensor, values: torch.Tensor):
    def hook(_m, _inp, out):
        h = first_tensor(out).clone()
        h[rows, pos] = values.to(h.dtype)
        return with_first_tensor(out, h)

    return hook


class _Group:
    """The rows of one batch (items with the same l0, pmin, T and number of positions): per row, its base
    row, its source row and its item."""

    def __init__(self, setups: list[TraceSetup], items: list[_Item], prefix_cache: dict):
        self.setups, self.items, self.prefix_cache = setups, items, prefix_cache
        self.adapter = setups[0].adapter
        dev = self.adapter.device
        base, src, item_of, starts = [], [], [], [0]
        for i, it in enumerate(items):
            s = setups[it.job]
            base += s.base_rows()
            src += s.source_rows()
            item_of += [i] * s.n_rows
            starts.append(len(base))
        self.base = torch.tensor(base, device=dev)
        self.src = torch.tensor(src, device=dev)
        self.item_of = item_of
        self.starts = starts
        self.run = setups[0].base_run
        self.source_run = setups[0].source_run
        self.ps = self.per_row([list(it.site.positions) for it in items])  # (rows, npos)

    def per_row(self, values: list) -> torch.Tensor:
        return torch.tensor([values[i] for i in self.item_of], device=self.adapter.device)

    def prefix(self, layer: int, length: int):
        """The base run's keys/values of positions < length at `layer`, for this group's rows."""
        key = (layer, length)
        if key not in self.prefix_cache:  # cut once per (layer, length), shared by the groups
            self.prefix_cache[key] = tuple(x[:, :, :length].contiguous() for x in self.run.kv[layer])
        return kv_rows(self.prefix_cache[key], self.base)


def _stage1(g: _Group, l0: int, npos: int) -> torch.Tensor:
    """Outputs of block l0 at each row's patched positions, (rows, npos, d)."""
    adapter = g.adapter
    ps = g.ps
    comps = [it.site.component for it in g.items]
    out = g.source_run.acts[("resid", l0)][g.src[:, None], ps] if "resid" in comps else None  # a copy
    if "mlp" in comps and g.run.additive and l0 < adapter.n_layers - 1:
        # block output = input + attn + mlp: an MLP patch changes the block's output by the MLP's change
        rows = torch.tensor([r for r, i in enumerate(g.item_of) if comps[i] == "mlp"], device=adapter.device)
        br, sr, pr = g.base[rows][:, None], g.src[rows][:, None], ps[rows]
        delta = g.source_run.acts[("mlp", l0)][sr, pr] - g.run.acts[("mlp", l0)][br, pr]
        h = g.run.block_inputs[l0 + 1][br, pr] + delta
        if out is None:
            out = torch.empty((len(g.base), npos, h.shape[-1]), dtype=h.dtype, device=h.device)
        out[rows] = h
        comps = [c if c != "mlp" else "resid" for c in comps]  # done
    need = [r for r, i in enumerate(g.item_of) if comps[i] != "resid"]
    if not need:
        return out
    rows = torch.tensor(need, device=adapter.device)
    br, pr = g.base[rows], ps[rows]
    hidden = g.run.block_inputs[l0][br[:, None], pr]
    k, v = kv_rows(g.run.kv[l0], br, int(pr.max()) + 1)
    allowed = torch.arange(k.shape[2], device=adapter.device)[None, None, :] <= pr[:, :, None]
    call = call_kwargs(g.run.block_call, pr, additive_mask(allowed, hidden.dtype))
    block = adapter.layer(l0)
    call[cache_name(block)] = FixedKV(k, v)
    handles = []
    try:
        for comp in ("mlp", "attn"):
            sub = [j for j, r in enumerate(need) if comps[g.item_of[r]] == comp]
            if sub:
                sub_t = torch.tensor(sub, device=adapter.device)
                vals = g.source_run.acts[(comp, l0)][g.src[rows[sub_t]][:, None], pr[sub_t]]
                hook = _patch_hook(sub_t[:, None], torch.arange(npos, device=adapter.device)[None, :], vals)
                handles.append(adapter.component(comp, l0).register_forward_hook(hook))
        h1 = first_tensor(block(hidden, **call))
    finally:
        for h in handles:
            h.remove()
    if out is None:
        return h1
    out[rows] = h1
    return out


def _stage2_patches(g: _Group, l0: int):
    """Forward hooks for the windowed layers after l0: {(component, layer): (rows, rel pos, values)}."""
    L = g.adapter.n_layers
    index: dict[tuple[str, int], list[list[int]]] = defaultdict(lambda: [[], [], [], []])
    for i, it in enumerate(g.items):
        for layer in it.site.layers:
            if layer <= l0:
                continue
            for p in it.site.positions:
                if layer == L - 1 and p != it.length - 1:
                    continue
                rel = 0 if (layer == L - 1 and it.site.component == "mlp" and SLICE_LAST_MLP) else p - it.pmin
                lists = index[(it.site.component, layer)]
                for r in range(g.starts[i], g.starts[i + 1]):
                    lists[0].append(r)
                    lists[1].append(rel)
                    lists[2].append(p)
                    lists[3].append(int(g.src[r]))
    dev = g.adapter.device
    out = {}
    for (comp, layer), (rows, rel, pos, srow) in index.items():
        t = lambda v: torch.tensor(v, device=dev)  # noqa: E731
        out[(comp, layer)] = (t(rows), t(rel), g.source_run.acts[(comp, layer)][t(srow), t(pos)])
    return out


def _stage2(g: _Group, l0: int, h1: torch.Tensor) -> torch.Tensor:
    """The last position's hidden state after the last block, (rows, d)."""
    adapter = g.adapter
    dev = adapter.device
    L = adapter.n_layers
    pmin, T = g.items[0].pmin, g.items[0].length
    n = T - pmin
    hidden = g.run.block_inputs[l0 + 1].index_select(0, g.base)[:, pmin:T]
    hidden[torch.arange(len(g.base), device=dev)[:, None], g.ps - pmin] = h1
    call = call_kwargs(g.run.block_call, torch.arange(pmin, T, device=dev)[None], causal_mask(pmin, n, hidden.dtype, dev))
    call[cache_name(adapter.layer(0))] = PrefixKV(lambda layer: g.prefix(layer, pmin))
    handles = []
    try:
        for (comp, layer), (rows, rel, vals) in _stage2_patches(g, l0).items():
            handles.append(adapter.component(comp, layer).register_forward_hook(_patch_hook(rows, rel, vals)))
        if SLICE_LAST_MLP and n > 1:
            handles.append(adapter.mlp(L - 1).register_forward_pre_hook(
                lambda _m, args: (args[0][:, -1:],) + tuple(args[1:])))
        for layer in range(l0 + 1, L):
            hidden = first_tensor(adapter.layer(layer)(hidden, **call))
    finally:
        for h in handles:
            h.remove()
    return hidden[:, -1]


def _logits(g: _Group, last_hidden: torch.Tensor) -> torch.Tensor:
    x = g.adapter.final_norm(last_hidden[:, None])
    return g.adapter.unembed(x)[:, -1]


def _run_group(g: _Group, l0: int, npos: int) -> torch.Tensor:
    h1 = _stage1(g, l0, npos)
    if l0 == g.adapter.n_layers - 1:  # the last position must be among the patched ones (else a no-op)
        idx = g.per_row([list(it.site.positions).index(it.length - 1) for it in g.items])
        return _logits(g, h1[torch.arange(len(idx), device=idx.device), idx])
    return _logits(g, _stage2(g, l0, h1))


def _metrics(g: _Group, logits: torch.Tensor) -> list[dict[str, float]]:
    """Per item: the mean over its rows of each metric (o, o' and the clean distribution are per fact)."""
    tgt = g.per_row([g.setups[it.job].target_id for it in g.items])
    alt = g.per_row([g.setups[it.job].alt_id for it in g.items])
    z = logits.double()
    lp = torch.log_softmax(z, -1)
    rows = torch.arange(len(tgt), device=z.device)
    cross = torch.empty(len(tgt), dtype=z.dtype, device=z.device)  # sum_v p_clean(v) log p_row(v)
    neg_entropy = torch.empty_like(cross)  # sum_v p_clean(v) log p_clean(v)
    i = 0
    while i < len(g.items):  # items of one fact are adjacent: their rows are contiguous
        j = i
        while j < len(g.items) and g.items[j].job == g.items[i].job:
            j += 1
        clp = g.setups[g.items[i].job].clean_logprobs.to(z.device)
        a, b = g.starts[i], g.starts[j]
        cross[a:b] = lp[a:b] @ clp.exp()
        neg_entropy[a:b] = (clp.exp() * clp).sum()
        i = j
    vals = {
        "prob": lp[rows, tgt].exp(),
        "logprob": lp[rows, tgt],
        "logit_diff": z[rows, tgt] - z[rows, alt],
        "kl": neg_entropy - cross,
    }
    starts = np.array(g.starts[:-1])
    sizes = np.diff(g.starts)
    means = {m: np.add.reduceat(v.cpu().numpy(), starts) / sizes for m, v in vals.items()}
    return [{m: float(means[m][i]) for m in vals} for i in range(len(g.items))]


def _token_budget(setup: TraceSetup, budget_bytes: float) -> int:
    cfg = setup.adapter.model.config
    d = setup.adapter.d_model
    d_ff = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * d
    el = setup.base_run.block_inputs[0].element_size()
    return max(1, int(budget_bytes // (el * (10 * d + 3 * d_ff))))


def run_sites(setups: list[TraceSetup], sites: list[list[Site]], budget_bytes: float = 1.5e8,
              max_tokens: int | None = None) -> list[list[dict[str, float]]]:
    """Metric values of `sites[j]` for fact `setups[j]` (all setups from one `build_setups` call), equal to the
    per-site loop's. Batches hold at most `max_tokens` row-positions (default: from a memory budget)."""
    results: list[list[dict | None]] = [[None] * len(s) for s in sites]
    groups: dict[tuple[int, int, int, int], list[_Item]] = defaultdict(list)
    for j, (setup, ss) in enumerate(zip(setups, sites)):
        for k, site in enumerate(ss):
            if is_noop(setup, site):
                results[j][k] = dict(setup.base_metrics)
                continue
            site = Site(site.component, tuple(sorted(site.layers)), tuple(sorted(site.positions)))
            it = _Item(j, k, site, site.layers[0], site.positions[0], setup.length)
            groups[(it.l0, it.pmin, it.length, len(site.positions))].append(it)
    if not groups:
        return results  # type: ignore[return-value]
    budget = max_tokens or _token_budget(setups[0], budget_bytes)
    prefix_cache: dict = {}
    for (l0, pmin, length, npos), items in sorted(groups.items()):
        items.sort(key=lambda it: it.job)
        rows_per_item = max(setups[it.job].n_rows for it in items)
        chunk = max(1, budget // max(1, (length - pmin) * rows_per_item))
        for i in range(0, len(items), chunk):
            part = items[i : i + chunk]
            g = _Group(setups, part, prefix_cache)
            with torch.no_grad():
                values = _metrics(g, _run_group(g, l0, npos))
            for it, v in zip(part, values):
                results[it.job][it.k] = v
    return results  # type: ignore[return-value]
