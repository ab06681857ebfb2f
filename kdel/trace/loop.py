"""ROME's per-site reference loop: one full forward pass per site, the noise samples as the batch.

The baseline every faster tracer is checked against (to 1e-5 in float64) and timed against.
"""

from __future__ import annotations

import torch

from kdel.models.hooks import edit_output
from kdel.trace.metrics import mean_metrics, row_metrics
from kdel.trace.patch import Site, TraceSetup
from kdel.trace.record import noise_hook


@torch.no_grad()
def patched_run_loop(setup: TraceSetup, site: Site) -> dict[str, float]:
    """The metrics of one site from one full forward pass of the base prompt with the patch applied."""
    adapter = setup.adapter
    rows = setup.n_rows
    src_rows = torch.tensor(setup.source_rows(), device=adapter.device)
    pos = list(site.positions)
    handles = []
    if setup.base.noise is not None:
        w = adapter.embedding_matrix()
        noise = setup.base.noise.to(device=w.device, dtype=w.dtype)
        handles.append(adapter.embed.register_forward_hook(noise_hook(noise, setup.base.subject_positions)))
    ctxs = []
    try:
        for layer in site.layers:
            src = setup.source_run.acts[(site.component, layer)][src_rows][:, pos]

            def fn(h, src=src):
                h = h.clone()
                h[:, pos] = src
                return h

            ctxs.append(edit_output(adapter.component(site.component, layer), fn))
            ctxs[-1].__enter__()
        ids = torch.tensor([setup.base.ids], dtype=torch.long, device=adapter.device).expand(rows, -1)
        logits = adapter.model(input_ids=ids.contiguous(), use_cache=False).logits[:, -1]
    finally:
        for c in reversed(ctxs):
            c.__exit__(None, None, None)
        for h in handles:
            h.remove()
    return mean_metrics(row_metrics(logits, setup.target_id, setup.alt_id, setup.clean_logprobs))


def trace_loop(setup: TraceSetup, sites: list[Site]) -> list[dict[str, float]]:
    return [patched_run_loop(setup, s) for s in sites]
