"""Patched metrics of arbitrary sites, by the reference loop (kdel.trace.loop) or the batched engine
(kdel.trace.engine): the same numbers, two ways (tests/unit/test_trace.py checks they agree)."""

from __future__ import annotations

from kdel.trace.engine import run_sites
from kdel.trace.loop import trace_loop as _loop
from kdel.trace.patch import Site, TraceSetup

__all__ = ["patched_metrics", "trace_batched", "trace_loop"]


def trace_loop(setup: TraceSetup, sites: list[Site]) -> list[dict[str, float]]:
    """One full forward pass per site (ROME's scheme): the baseline."""
    return _loop(setup, sites)


def trace_batched(setup: TraceSetup, sites: list[Site], **kw) -> list[dict[str, float]]:
    """The same numbers from resumed, batched forwards."""
    return run_sites([setup], [sites], **kw)[0]


def patched_metrics(setup: TraceSetup, sites: list[Site], batched: bool = True) -> list[dict[str, float]]:
    """Metric values of arbitrary sites (several layers and/or positions at once), batched or looped."""
    return trace_batched(setup, sites) if batched else trace_loop(setup, sites)
