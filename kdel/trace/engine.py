"""The exact batched tracer: the per-site loop's numbers, for many facts at once, with far less work.

For a site whose first patched layer is l0 and whose positions are P (pmin = min P), exactly:
- *stage 1*: at layer l0 only the positions in P change (the block's input is the base run's, so its keys
  and values are too). Block l0 runs on the positions P alone, attending to the base run's cached keys and
  values of layer l0, with the patch applied; a resid site needs no compute at all (its block output at P
  is the source's).
  An MLP site in an additive block (output = input + attn + mlp, checked on the recording) needs none either:
  the block's output changes by exactly the MLP output's change.
- *stage 2*: layers l0+1 .. L-1 run on positions pmin .. T-1 only (a patch cannot reach earlier positions),
  attending to the base run's cached keys/values of positions < pmin; the input of layer l0+1 is the base
  run's, with stage 1's outputs at P. Windowed sites patch their later layers here.
- *last layer*: only the last position's output matters, so its MLP runs on the last position alone (the
  block adds it to the residual stream by broadcasting); only the last position is normed and unembedded.
- *skip*: sites that provably cannot change the last position's logits get the base run's value.
- *batch*: sites of every fact with the same l0 and number of positions |P| share batches; a batch computes
  the same number n of positions for every row (rows needing fewer recompute some base positions unchanged).
  Facts' prompts may differ in length: each row gets its own position ids, rotary embeddings, cached prefix
  (left-padded) and attention mask. Every cached tensor comes from the shared recordings of `build_setups`.
- *waves*: batches with the same stage-2 length but different l0 run stage 2 together, layer by layer: block j
  runs once on every row whose l0 < j (a batch joins the wave at its layer l0 + 1), so a few facts' sites fill
  block calls as large as many facts' would (at most the memory budget of row-positions per wave); many
  batches' rows are unembedded in one call. Which sites share a batch, a wave or an unembedding is decided by
  kdel.trace.schedule, from the sites and the model alone.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from kdel.models.adapter import first_tensor, with_first_tensor
from kdel.trace.blocks import (
    FixedKV,
    PrefixKV,
    additive_mask,
    cache_name,
    call_kwargs,
    causal_mask,
    kv_rows,
    padded_prefix,
)
from kdel.trace.patch import Site, TraceSetup, is_noop
from kdel.trace.schedule import UNEMBED_ROWS, Item, batches, chunks, min_tokens_for, token_budget, waves

SLICE_LAST_MLP = True  # the last layer's MLP on the last position only (exact; off only to measure it)


def _patch_hook(rows: torch.Tensor, pos: torch.Tensor, values: torch.Tensor):
    def hook(_m, _inp, out):
        h = first_tensor(out).clone()
        h[rows, pos] = values.to(h.dtype)
        return with_first_tensor(out, h)

    return hook


class _Group:
    """The rows of one batch (items with the same l0, number of positions and stage-2 length n): per row, its
    base row, its source row, its item and its stage-2 start."""

    def __init__(self, setups: list[TraceSetup], items: list[Item], prefix_cache: dict, n: int):
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
        self.n = n
        self.starts_at = self.per_row([it.start for it in items])  # (rows,)

    def per_row(self, values: list) -> torch.Tensor:
        return torch.tensor([values[i] for i in self.item_of], device=self.adapter.device)


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
                rel = 0 if (layer == L - 1 and it.site.component == "mlp" and SLICE_LAST_MLP) else p - it.start
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


def _sliced(call: dict, rows: int, total: int) -> dict:
    """A wave's block call for its first `rows` rows (the per-row tensors cut; broadcast ones kept)."""
    if rows == total:
        return call
    out = dict(call)
    for key in ("position_ids", "attention_mask"):
        v = out.get(key)
        if isinstance(v, torch.Tensor) and v.shape[0] == total:
            out[key] = v[:rows]
    pe = out.get("position_embeddings")
    if isinstance(pe, tuple) and pe[0].shape[0] == total:
        out["position_embeddings"] = tuple(x[:rows] for x in pe)
    return out


def _stage2(parts: list[tuple[int, _Group, torch.Tensor]]) -> torch.Tensor:
    """Stage 2 of several batches with the same length n, sorted by l0, run layer by layer as one *wave*: at
    layer j the block runs once on every row whose l0 < j (rows join as the wave reaches their first layer),
    so batches of different first layers share block calls. Returns the last position's hidden state after the
    last block, (rows of all parts, d), the parts' rows in order."""
    g0 = parts[0][1]
    adapter, run, n = g0.adapter, g0.run, g0.n
    dev, L = adapter.device, adapter.n_layers
    offs = [0]
    for _, g, _ in parts:
        offs.append(offs[-1] + len(g.base))
    total = offs[-1]
    base = torch.cat([g.base for _, g, _ in parts])
    starts = torch.cat([g.starts_at for _, g, _ in parts])
    pos = starts[:, None] + torch.arange(n, device=dev)[None]
    dtype = run.block_inputs[0].dtype
    same = bool((starts == starts[0]).all())
    if same:
        kidx, mask = None, causal_mask(int(starts[0]), n, dtype, dev)
    else:
        kidx, mask = padded_prefix(starts, n, dtype)
    active = [0]

    def prefix(layer: int):
        rows = base[: active[0]]
        if kidx is None:
            key = (layer, int(starts[0]))
            if key not in g0.prefix_cache:
                g0.prefix_cache[key] = tuple(x[:, :, : key[1]].contiguous() for x in run.kv[layer])
            return kv_rows(g0.prefix_cache[key], rows)
        return tuple(x[rows[:, None], :, kidx[: active[0]]].permute(0, 2, 1, 3) for x in run.kv[layer])

    call = call_kwargs(g0.run.block_call, pos, mask)
    call[cache_name(adapter.layer(0))] = PrefixKV(prefix)
    patches: dict[tuple[str, int], list] = defaultdict(list)
    for i, (l0, g, _) in enumerate(parts):
        for key, (rws, rel, vals) in _stage2_patches(g, l0).items():
            patches[key].append((rws + offs[i], rel, vals))
    handles = []
    hidden, nxt = None, 0
    try:
        for (comp, layer), lists in patches.items():
            rws, rel, vals = (torch.cat(x) for x in zip(*lists))
            handles.append(adapter.component(comp, layer).register_forward_hook(_patch_hook(rws, rel, vals)))
        if SLICE_LAST_MLP and n > 1:
            handles.append(adapter.mlp(L - 1).register_forward_pre_hook(
                lambda _m, args: (args[0][:, -1:],) + tuple(args[1:])))
        for layer in range(parts[0][0] + 1, L):
            joining = []
            while nxt < len(parts) and parts[nxt][0] < layer:  # rows whose stage 2 starts here
                l0, g, h1 = parts[nxt]
                h = g.run.block_inputs[l0 + 1][g.base[:, None], pos[offs[nxt] : offs[nxt + 1]]]
                h[torch.arange(len(g.base), device=dev)[:, None], g.ps - g.starts_at[:, None]] = h1
                joining.append(h)
                nxt += 1
            if joining:
                hidden = torch.cat(([hidden] if hidden is not None else []) + joining)
            active[0] = len(hidden)
            hidden = first_tensor(adapter.layer(layer)(hidden, **_sliced(call, active[0], total)))
    finally:
        for h in handles:
            h.remove()
    return hidden[:, -1]


def _logits(g: _Group, last_hidden: torch.Tensor) -> torch.Tensor:
    x = g.adapter.final_norm(last_hidden[:, None])
    return g.adapter.unembed(x)[:, -1]


def _last_layer(g: _Group, h1: torch.Tensor) -> torch.Tensor:
    """A batch patched at the last layer: its last position's hidden state is stage 1's output (the last
    position must be among the patched ones, else the site is a no-op)."""
    idx = g.per_row([list(it.site.positions).index(it.length - 1) for it in g.items])
    return h1[torch.arange(len(idx), device=idx.device), idx]


def _finish(done: list, results: list) -> None:
    """Metrics of (batch, last hidden state) pairs into `results`, unembedding many batches' rows per call."""
    for chunk in chunks(done, UNEMBED_ROWS):
        logits = _logits(chunk[0][0], torch.cat([last for _, last in chunk]))
        k = 0
        for g, last in chunk:
            for it, v in zip(g.items, _metrics(g, logits[k : k + len(last)])):
                results[it.job][it.k] = v
            k += len(last)


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


def run_sites(setups: list[TraceSetup], sites: list[list[Site]], budget_bytes: float = 1.5e8,
              max_tokens: int | None = None, min_tokens: int | None = None) -> list[list[dict[str, float]]]:
    """Metric values of `sites[j]` for fact `setups[j]` (all setups from one `build_setups` call), equal to the
    per-site loop's. Batches hold at most `max_tokens` row-positions (default: from a memory budget) and are
    merged up to `min_tokens` (default: `min_tokens_for`)."""
    results: list[list[dict | None]] = [[None] * len(s) for s in sites]
    groups: dict[tuple[int, int], list[Item]] = defaultdict(list)
    for j, (setup, ss) in enumerate(zip(setups, sites)):
        for k, site in enumerate(ss):
            if is_noop(setup, site):
                results[j][k] = dict(setup.base_metrics)
                continue
            site = Site(site.component, tuple(sorted(site.layers)), tuple(sorted(site.positions)))
            it = Item(j, k, site, site.layers[0], site.positions[0], setup.length)
            groups[(it.l0, len(site.positions))].append(it)
    if not groups:
        return results  # type: ignore[return-value]
    max_tokens = max_tokens or token_budget(setups[0], budget_bytes)
    min_tokens = min(max_tokens, min_tokens or min_tokens_for(setups[0].adapter))
    prefix_cache: dict = {}
    L = setups[0].adapter.n_layers
    last_layer, parts = [], []  # batches patched at the last layer; (l0, npos, batch) needing stage 2
    for (l0, npos), items in sorted(groups.items()):
        for n, part in batches(items, lambda it: setups[it.job].n_rows, min_tokens, max_tokens):
            part.sort(key=lambda it: it.job)  # a fact's rows contiguous (for the metrics)
            g = _Group(setups, part, prefix_cache, n)
            (last_layer if l0 == L - 1 else parts).append((l0, npos, g))
    with torch.no_grad():  # one wave at a time, metrics included: memory stays within a wave's budget
        done = [(g, _last_layer(g, _stage1(g, l0, npos))) for l0, npos, g in last_layer]
        _finish(done, results)
        for wave in waves(parts, max_tokens):
            last = _stage2([(l0, g, _stage1(g, l0, npos)) for l0, npos, g in wave])
            bounds = np.cumsum([0] + [len(g.base) for _, _, g in wave])
            _finish([(g, last[i:j]) for (_, _, g), i, j in zip(wave, bounds[:-1], bounds[1:])], results)
    return results  # type: ignore[return-value]
