"""Trace files: `traces.jsonl` (one fact per line) + `traces.npz` (the maps) + optional heatmaps (DESIGN §5).

npz keys are `<line index>/<component>/<metric>`; each array is [n_layers x n_positions] of raw metric values
(nan at positions the config did not trace). Format `kdel-trace/1`; fields added since its first version (all
optional when reading): `method` and `approximate` (attribution patching is approximate), `peak` (per site: the
peak MLP layer of the normalised `prob` effect with its effect size and the runner-up's), config `method` and
`positions`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from kdel.errors import UserError
from kdel.io import atomic_write_bytes, atomic_write_text, read_jsonl
from kdel.trace.api import SITES, FactTrace, TraceConfig

FORMAT = "kdel-trace/1"
_SCALARS = ("fact_id", "tokens", "subject_positions", "last_subject", "last", "clean", "corrupted", "subject",
            "target", "prompt", "corrupted_prompt", "target_token", "alt_token", "partner_fact_id",
            "subject_popularity", "object_popularity", "notes")


def _line(t: FactTrace) -> dict:
    row = {"format": FORMAT, **{k: getattr(t, k) for k in _SCALARS}, "config": t.config.to_json(),
           "method": t.config.method, "approximate": t.approximate}
    if "mlp" in t.patched and "prob" in t.patched["mlp"]:
        traced = [s for s in SITES if not np.isnan(t.raw("mlp", "prob")[:, t.position(s)]).any()]
        row["peak_layer"] = {s: t.peak_layer(s, "mlp", "prob") for s in traced}
        row["peak"] = {s: {**t.peak(s, "mlp", "prob").to_json(), "component": "mlp", "metric": "prob",
                           "window": t.config.window} for s in traced}
    return row


def save_traces(traces: list[FactTrace], out_dir, plots: bool = False) -> None:
    """Write the traces into `out_dir` (each file atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(_line(t), sort_keys=True, ensure_ascii=False) + "\n" for t in traces)
    arrays = {f"{i}/{c}/{m}": a for i, t in enumerate(traces) for c, ms in t.patched.items() for m, a in ms.items()}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(out / "traces.npz", buf.getvalue())
    atomic_write_text(out / "traces.jsonl", lines)
    if plots:
        from kdel.trace.plots import save_heatmaps

        for t in traces:
            save_heatmaps(t, out / "heatmaps")


def load_traces(out_dir) -> list[FactTrace]:
    out = Path(out_dir)
    jl, npz = out / "traces.jsonl", out / "traces.npz"
    if not jl.is_file() or not npz.is_file():
        raise UserError(f"{out} is not a trace directory (needs traces.jsonl and traces.npz)")
    arrays = np.load(npz, allow_pickle=False)
    traces = []
    for lineno, row in read_jsonl(jl):
        i = lineno - 1  # arrays are keyed by the line index written by save_traces
        if not isinstance(row, dict) or row.get("format") != FORMAT:
            found = row.get("format") if isinstance(row, dict) else type(row).__name__
            raise UserError(f"{jl}:{lineno}: unknown trace format {found!r} (expected {FORMAT})")
        config = TraceConfig.from_json(row["config"])
        patched = {c: {m: np.asarray(arrays[f"{i}/{c}/{m}"]) for m in config.metrics} for c in config.components}
        kw = {k: row[k] for k in _SCALARS if k in row}
        traces.append(FactTrace(patched=patched, config=config, **kw))
    return traces
