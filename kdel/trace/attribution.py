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

import torch

from kdel.models.adapter import ModelAdapter
from kdel.trace.config import TraceConfig
from kdel.trace.corrupt import Corruption
from kdel.trace.metrics import METRICS
from kdel.trace.patch import _first_changed, window_layers
from kdel.trace.record import (
    RecordedRun,
    _modules,
    _offsets,
    assemble_from,
    forward_from,
    record_from,
    record_runs,
)


@dataclass
class AttributionSetup:
    """What a FactTrace needs besides the maps (the same fields as an exact TraceSetup)."""

    clean: dict[str, float]
    corrupted: dict[str, float]
    target_id: int
    alt_id: int
    length: int


@dataclass
class Attribution:
    """attribution_maps' result: per fact a setup and the estimated maps component -> metric -> [layer x
    position]; `base_run`: the corrupted runs' recording, when asked for (`record_base`), else None."""

    setups: list[AttributionSetup]
    maps: list[dict]
    base_run: RecordedRun | None = None


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


def attribution_maps(adapter: ModelAdapter, corruptions: list[Corruption], config: TraceConfig,
                     clean: RecordedRun | None = None, record_base: bool = False) -> Attribution:
    """Per fact: an AttributionSetup and the estimated maps component -> metric -> [layer x position].

    The base run is computed from the first corrupted token on (earlier positions are identical in both runs,
    so every estimate there is 0, as the exact value is): one forward with gradients and one backward per
    metric. `clean`: the clean runs' full recording when already made (`record_runs`). With `record_base`
    (denoising only), the same forward also records the corrupted runs as `record_from(..., acts=(),
    base=True)` would, value for value, returned as `base_run`: the exact tracer can then confirm estimates
    without a second corrupted forward."""
    denoise = config.direction == "denoise"
    if record_base and not denoise:
        raise ValueError("record_base needs the denoising direction (the base run is the corrupted one)")
    clean_runs, corr_runs = [c.clean for c in corruptions], [c.corrupted for c in corruptions]
    starts = [_first_changed(c) for c in corruptions]
    clean = clean if clean is not None else record_runs(adapter, clean_runs)
    comps = tuple(config.components)
    base_runs = corr_runs if denoise else clean_runs
    source = clean if denoise else record_from(adapter, clean, corr_runs, starts, acts=comps, base=False)
    modules = _modules(adapter, comps, record_base)
    batches = list(forward_from(adapter, clean, base_runs, starts, modules, record_base, leaves=comps))
    base_record = assemble_from(adapter, clean, base_runs, batches, modules, True) if record_base else None
    dev = clean.logits.device
    b_off, s_off = _offsets(base_runs), source.offsets
    base_logits = torch.zeros((b_off[-1], clean.logits.shape[-1]), dtype=batches[0].logits.dtype, device=dev)
    order = torch.tensor([r for b in batches for i in b.idx for r in range(b_off[i], b_off[i + 1])], device=dev)
    base_logits = base_logits.index_put((order,), torch.cat([b.logits for b in batches]))
    c_logits = base_logits if denoise else source.logits
    alts = _alt_ids(corruptions, c_logits.detach(), _offsets(corr_runs))
    clean_lp = torch.log_softmax(clean.logits.double(), -1)  # one row per fact
    fact_of = torch.tensor([i for i, r in enumerate(base_runs) for _ in range(r.n_rows)], device=dev)
    tgt = torch.tensor([c.target_id for c in corruptions], device=dev)
    alt = torch.tensor(alts, device=dev)
    base_m = torch_metrics(base_logits, tgt[fact_of], alt[fact_of], clean_lp[fact_of])
    leaf_list = [leaf for b in batches for leaf in b.leaves.values()]
    grads = {}
    for j, m in enumerate(config.metrics):
        g = torch.autograd.grad(base_m[m].sum(), leaf_list, retain_graph=j < len(config.metrics) - 1,
                                allow_unused=True)
        grads[m] = [torch.zeros_like(leaf) if x is None else x for leaf, x in zip(leaf_list, g)]
    with torch.no_grad():
        c_fact = [i for i, r in enumerate(corr_runs) for _ in range(r.n_rows)]
        c_metrics = torch_metrics(c_logits, tgt[c_fact], alt[c_fact], clean_lp[c_fact])
        cl_metrics = torch_metrics(clean.logits, tgt, alt, clean_lp)
        c_off = _offsets(corr_runs)
        L = adapter.n_layers
        setups, maps = [None] * len(corruptions), [None] * len(corruptions)
        k = 0
        for b in batches:
            idx, start, acts, keys = b.idx, b.start, b.outputs, list(b.leaves)
            local = 0  # this batch's rows, run by run
            for i in idx:
                c = corruptions[i]
                T = len(c.clean.ids)
                nb, ns = base_runs[i].n_rows, source.offsets[i + 1] - source.offsets[i]
                n = max(nb, ns)
                brow = [local + (s if nb > 1 else 0) for s in range(n)]
                srow = [s_off[i] + (s if ns > 1 else 0) for s in range(n)]
                local += nb
                cl = {m: float(cl_metrics[m][i]) for m in METRICS}
                co = {m: float(c_metrics[m][c_off[i] : c_off[i + 1]].mean()) for m in METRICS}
                base_val = co if denoise else cl
                setups[i] = AttributionSetup(cl, co, c.target_id, alts[i], T)
                fact_maps = {}
                for comp in comps:
                    delta = torch.stack([source.acts[(comp, layer)][srow, start:T] - acts[(comp, layer)][brow]
                                         for layer in range(L)]).double()  # (L, rows, T - start, d)
                    w = 1 if comp == "resid" else config.window
                    fact_maps[comp] = {}
                    for m in config.metrics:
                        g = torch.stack([grads[m][k + keys.index((comp, layer))][brow] for layer in range(L)])
                        per_layer = torch.zeros((L, T), dtype=torch.float64, device=dev)
                        per_layer[:, start:] = (delta * g.double()).sum(-1).mean(1)
                        est = torch.stack([per_layer[list(window_layers(layer, w, L))].sum(0) for layer in range(L)])
                        fact_maps[comp][m] = base_val[m] + est.cpu().numpy()
                maps[i] = fact_maps
            k += len(keys)
    return Attribution(setups, maps, base_record)
