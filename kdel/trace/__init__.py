"""Localization: exact, batched causal tracing / activation patching (DESIGN §5)."""

from kdel.trace.api import (
    SITES,
    FactTrace,
    Peak,
    TraceConfig,
    hase_tracing_effect,
    known_mask,
    trace_fact,
    trace_facts,
    trace_many,
)
from kdel.trace.store import load_traces, save_traces

__all__ = [
    "SITES",
    "FactTrace",
    "Peak",
    "TraceConfig",
    "hase_tracing_effect",
    "known_mask",
    "load_traces",
    "save_traces",
    "trace_fact",
    "trace_facts",
    "trace_many",
]
