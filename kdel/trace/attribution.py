"""Attribution patching: a first-order (gradient) estimate of every activation-patching site at once.

Patching site (component c, layer l, position p) replaces the base run's activation a with the source run's
a'. To first order the metric becomes

    M(patched) ~ M(base) + (a' - a) . dM/da        (the gradient taken in the base run)

so one forward of the source run, one forward of the base run and one backward per metric give every site's
estimate: denoising differentiates the corrupted run, noising the clean run. With noise samples, a site's
estimate is the mean over its rows, as the exact value is; a window's estimate is the sum of its layers'.

It is an *approximation* (Nanda 2023; Syed et al. 2023), never the source of reported effects: it is exact
only when the metric is linear in the patched activation, and poor where the effect is nonlinear: saturated
probabilities, early layers whose change passes through many nonlinearities, and `kl` when noising (the
clean run is KL's minimum, where its gradient is zero: every estimate is 0). kdel uses it to rank layers
before the exact tracer confirms the best ones (kdel.trace.localize).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kdel.models.adapter import ModelAdapter, first_tensor, with_first_tensor
from kdel.trace.config import TraceConfig
from kdel.trace.corrupt import Corruption, RunInput
from kdel.trace.metrics import METRICS
from kdel.trace.patch import window_layers
from kdel.trace.record import COMPONENTS, _batch_inputs, _offsets


@dataclass
class AttributionSetup:
    """What a FactTrace needs besides the maps (the same fields as an exact TraceSetup)."""

    clean: dict[str, float]
    corrupted: dict[str, float]
    target_id: int
    alt_id: int
    length: int


def _forward(adapter: ModelAdapter, runs: list[RunInput], grad: bool):
    """Forward with every component output recorded. With `grad`, a zero leaf is added to each output so
    that its gradient is the metric's gradient with respect to that output. Returns (outputs, leaves,
    logits at each row's last real position)."""
    ids, noise, last = _batch_inputs(adapter, runs)
    acts, leaves, handles = {}, {}, []

    def hook(key):
        def fn(_m, _inp, out):
            h = first_tensor(out)
            acts[key] = h.detach()
            if not grad:
                return None
            leaves[key] = torch.zeros_like(h, requires_grad=True)
            return with_first_tensor(out, h + leaves[key])

        return fn

    for c in COMPONENTS:
        for i in range(adapter.n_layers):
            handles.append(adapter.component(c, i).register_forward_hook(hook((c, i))))
    if noise is not None:
        handles.append(adapter.embed.register_forward_hook(lambda _m, _i, out: out + noise))
    keep = torch.unique(last)
    try:
        with torch.set_grad_enabled(grad):
            out = adapter.model(input_ids=ids, use_cache=False, logits_to_keep=keep)
    finally:
        for h in handles:
            h.remove()
    logits = out.logits[torch.arange(len(last), device=last.device), torch.searchsorted(keep, last)]
    return acts, leaves, logits


def torch_metrics(logits: torch.Tensor, target: torch.Tensor, alt: torch.Tensor, clean_lp: torch.Tensor) -> dict:
    """Differentiable per-row metrics (float64); target/alt (rows,), clean_lp (rows, vocab)."""
    z = logits.double()
    lp = torch.log_softmax(z, -1)
    rows = torch.arange(len(z), device=z.device)
    return {
        "prob": lp[rows, target].exp(),
        "logprob": lp[rows, target],
        "logit_diff": z[rows, target] - z[rows, alt],
        "kl": (clean_lp.exp() * (clean_lp - lp)).sum(-1),
    }


def _alt_ids(corruptions: list[Corruption], c_logits: torch.Tensor, offsets: list[int]) -> list[int]:
    out = []
    for i, c in enumerate(corruptions):
        if c.alt_id is not None:
            out.append(c.alt_id)
            continue
        p = torch.softmax(c_logits[offsets[i] : offsets[i + 1]].detach().double(), -1).mean(0)
        p[c.target_id] = -1.0
        out.append(int(p.argmax()))
    return out


def attribution_maps(adapter: ModelAdapter, corruptions: list[Corruption], config: TraceConfig):
    """Per fact: an AttributionSetup and the estimated maps component -> metric -> [layer x position]."""
    denoise = config.direction == "denoise"
    clean_runs, corr_runs = [c.clean for c in corruptions], [c.corrupted for c in corruptions]
    base_runs, src_runs = (corr_runs, clean_runs) if denoise else (clean_runs, corr_runs)
    src_acts, _, src_logits = _forward(adapter, src_runs, grad=False)
    base_acts, leaves, base_logits = _forward(adapter, base_runs, grad=True)
    c_logits, cl_logits = (base_logits, src_logits) if denoise else (src_logits, base_logits)
    c_off, cl_off = _offsets(corr_runs), _offsets(clean_runs)
    alts = _alt_ids(corruptions, c_logits, c_off)
    b_off, s_off = _offsets(base_runs), _offsets(src_runs)
    dev = base_logits.device
    fact_of = torch.tensor([i for i, r in enumerate(base_runs) for _ in range(r.n_rows)], device=dev)
    clean_lp = torch.log_softmax(cl_logits.detach().double()[torch.tensor(cl_off[:-1], device=dev)], -1)
    tgt = torch.tensor([c.target_id for c in corruptions], device=dev)
    alt = torch.tensor(alts, device=dev)
    base_m = torch_metrics(base_logits, tgt[fact_of], alt[fact_of], clean_lp[fact_of])
    keys = [k for k in leaves if k[0] in config.components]
    grads = {}
    for j, m in enumerate(config.metrics):
        last = j == len(config.metrics) - 1
        g = torch.autograd.grad(base_m[m].sum(), [leaves[k] for k in keys], retain_graph=not last, allow_unused=True)
        grads[m] = {k: (torch.zeros_like(leaves[k]) if x is None else x) for k, x in zip(keys, g)}
    with torch.no_grad():
        c_rows = lambda i: slice(c_off[i], c_off[i + 1])  # noqa: E731
        cl_metrics = torch_metrics(cl_logits, tgt[[i for i, r in enumerate(clean_runs) for _ in range(r.n_rows)]],
                                   alt[[i for i, r in enumerate(clean_runs) for _ in range(r.n_rows)]],
                                   clean_lp[[i for i, r in enumerate(clean_runs) for _ in range(r.n_rows)]])
        c_fact = [i for i, r in enumerate(corr_runs) for _ in range(r.n_rows)]
        c_metrics = torch_metrics(c_logits, tgt[c_fact], alt[c_fact], clean_lp[c_fact])
        setups, maps = [], []
        L = adapter.n_layers
        for i, c in enumerate(corruptions):
            T = len(c.clean.ids)
            n = max(base_runs[i].n_rows, src_runs[i].n_rows)
            brow = [b_off[i] + (s if base_runs[i].n_rows > 1 else 0) for s in range(n)]
            srow = [s_off[i] + (s if src_runs[i].n_rows > 1 else 0) for s in range(n)]
            clean = {m: float(cl_metrics[m][cl_off[i]]) for m in METRICS}
            corrupted = {m: float(c_metrics[m][c_rows(i)].mean()) for m in METRICS}
            base_val = corrupted if denoise else clean
            setups.append(AttributionSetup(clean, corrupted, c.target_id, alts[i], T))
            fact_maps = {}
            for comp in config.components:
                delta = torch.stack([src_acts[(comp, layer)][srow, :T] - base_acts[(comp, layer)][brow, :T]
                                     for layer in range(L)])  # (L, rows, T, d)
                w = 1 if comp == "resid" else config.window
                fact_maps[comp] = {}
                for m in config.metrics:
                    g = torch.stack([grads[m][(comp, layer)][brow, :T] for layer in range(L)])
                    per_layer = (delta.double() * g.double()).sum(-1).mean(1)  # (L, T)
                    est = torch.stack([per_layer[list(window_layers(layer, w, L))].sum(0) for layer in range(L)])
                    fact_maps[comp][m] = base_val[m] + est.cpu().numpy().astype(np.float64)
            maps.append(fact_maps)
    return setups, maps
