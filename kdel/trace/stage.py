"""The trace stage: trace facts of a KG bundle or facts file in a model and write a trace directory.

One function for the CLI (`kdel trace`) and the pipeline. Writes, in one rename (kdel.outputs rule: the
output is missing, empty or a trace directory, never an input):
  OUT/traces.jsonl, OUT/traces.npz   the traces (kdel.trace.store)
  OUT/summary.json                   what was traced, from what, and what was skipped
  OUT/heatmaps/*.png                 with plots=True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kdel.errors import UserError

SUMMARY_FORMAT = "kdel-trace-summary/1"


@dataclass
class TraceRun:
    out: Path
    traces: list
    skipped: list[int] = field(default_factory=list)  # facts the model does not recall (not traced)
    summary: dict = field(default_factory=dict)


def spread_by_popularity(facts: list, n: int) -> list:
    """`n` facts evenly spaced in subject popularity (both extremes included), in id order."""
    if n >= len(facts):
        return list(facts)
    ranked = sorted(facts, key=lambda f: (f.subject_popularity, f.id))
    idx = sorted({round(i * (len(ranked) - 1) / max(1, n - 1)) for i in range(n)})
    return sorted((ranked[i] for i in idx), key=lambda f: f.id)


def _abs(path) -> str | None:
    return None if path is None else str(Path(path).resolve())


def run_trace(model, out, *, kg=None, facts=None, config=None, fact_ids=None, limit: int | None = None,
              spread: int | None = None, strict: bool = False, plots: bool = False, device: str = "cpu",
              progress: bool = True) -> TraceRun:
    """Trace facts of `kg` (a bundle directory) or `facts` (a facts file) in the model directory `model`.

    Which facts: `fact_ids` (else all), then the first `limit`; or, with `spread`, that many facts the model
    recalls, evenly spread in subject popularity. Facts the model does not recall are skipped with a warning
    (with `strict`, the first is an error). Nothing is written unless at least one fact is traced."""
    from kdel.facts import load_fact_table
    from kdel.io import atomic_write_json, staged_dir
    from kdel.models.loading import load_model_for_table
    from kdel.outputs import check_out_dir
    from kdel.runtime import resolve_device, seed_everything
    from kdel.trace import TraceConfig, known_mask, save_traces, trace_facts

    config = config or TraceConfig()
    config.validate()
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}")
    if spread is not None and spread < 1:
        raise UserError(f"the number of facts to trace must be >= 1, got {spread}")
    out = check_out_dir(out, "trace", inputs=[model, kg, facts])
    dev = resolve_device(device)
    seed_everything(config.seed)
    table = load_fact_table(kg=kg, facts=facts)
    chosen = [table.fact(i) for i in dict.fromkeys(fact_ids)] if fact_ids else list(table.facts)
    if limit is not None:
        chosen = chosen[:limit]
    m, tok = load_model_for_table(model, table, dev)
    if spread is not None:
        known = known_mask(m, tok, chosen)
        chosen = spread_by_popularity([f for f, k in zip(chosen, known) if k], spread)
    skipped: list[int] = []
    traces = trace_facts(m, tok, chosen, table, config, progress=progress, strict=strict, skipped=skipped)
    if not traces:
        raise UserError("no fact left to trace: the model recalls none of the chosen facts")
    summary = {
        "format": SUMMARY_FORMAT,
        "model": _abs(model),
        "kg": _abs(kg),
        "facts": _abs(facts),
        "source": table.source,
        "source_hash": table.source_hash,
        "config": config.to_json(),
        "n_traced": len(traces),
        "fact_ids": [t.fact_id for t in traces],
        "skipped_unknown": skipped,
        "fallbacks_to_gn": [t.fact_id for t in traces if t.notes],
        "method": config.method,
        "approximate": config.approximate,
    }
    with staged_dir(out) as staging:
        save_traces(traces, staging, plots=plots)
        atomic_write_json(staging / "summary.json", summary)
    return TraceRun(Path(out), traces, skipped, summary)
