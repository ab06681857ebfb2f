"""Activation patching: sites, per-fact setups, and the two ways to evaluate sites (DESIGN §5, §12).

A *site* is (component, layers, positions): the hidden-state output of that component (resid = block
output, mlp, attn) at those layers and positions is replaced by the *source* run's, inside the *base* run.
Denoising: base = corrupted run, source = clean run. Noising: base = clean run, source = corrupted run.
With Gaussian noise, every site is evaluated on `n_samples` rows (one per noise draw: row s uses draw s
of whichever run is noised), and its value is the mean of the per-row metrics.

- `trace_loop` (kdel.trace.dispatch; kdel.trace.loop): the baseline, one full forward pass per site (ROME's scheme).
- `trace_batched` (kdel.trace.dispatch; kdel.trace.engine): the same numbers from resumed, batched forwards, for one fact or
  (`run_sites`) for many facts at once.

`build_setups` records the clean and corrupted runs of many facts in two batched forwards; each fact gets a
`TraceSetup`, a view of its rows in those shared recordings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kdel.models.adapter import ModelAdapter
from kdel.trace.config import DIRECTIONS
from kdel.trace.corrupt import Corruption, RunInput
from kdel.trace.metrics import mean_metrics, row_metrics
from kdel.trace.record import COMPONENTS, RecordedRun, record_from, record_runs

__all__ = ["COMPONENTS", "DIRECTIONS", "Site", "TraceSetup", "build_setup", "build_setups", "is_noop",
           "window_layers"]


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
class TraceSetup:
    """One fact's view of the shared recordings: its rows, its o and o', and its clean/corrupted metrics."""

    adapter: ModelAdapter
    direction: str
    base: RunInput  # the base run's input (ids, noise)
    source: RunInput
    base_run: RecordedRun  # shared by every fact of one `build_setups` call
    source_run: RecordedRun
    base_index: int  # this fact's run index in base_run / source_run
    source_index: int
    target_id: int
    alt_id: int
    clean_logprobs: torch.Tensor  # (vocab,) float64
    clean: dict[str, float]
    corrupted: dict[str, float]
    n_rows: int  # rows per site
    first_changed: int  # first position where the clean and corrupted inputs differ
    base_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return len(self.base.ids)

    def base_rows(self) -> list[int]:
        """Row s of a site -> row of base_run (global index)."""
        off = self.base_run.offsets[self.base_index]
        return [off + (s if self.base.n_rows > 1 else 0) for s in range(self.n_rows)]

    def source_rows(self) -> list[int]:
        off = self.source_run.offsets[self.source_index]
        return [off + (s if self.source.n_rows > 1 else 0) for s in range(self.n_rows)]


def _first_changed(c: Corruption) -> int:
    a, b = c.clean, c.corrupted
    differs = [i for i, (x, y) in enumerate(zip(a.ids, b.ids)) if x != y]
    noised = list(b.subject_positions) if b.noise is not None else []
    return min(differs + noised + [len(a.ids)])


def build_setups(adapter: ModelAdapter, corruptions: list[Corruption], direction: str,
                 recorded: tuple | None = None) -> list[TraceSetup]:
    """Record the clean and corrupted runs of every fact (two batched forwards) and fix each fact's o'
    (gn: the corrupted run's most probable token other than o). `recorded`: (clean, corrupted) recordings
    already made exactly as these would be (e.g. the corrupted one by attribution's forward)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}")
    denoise = direction == "denoise"
    if recorded is not None:
        clean, corrupted = recorded
    else:
        clean = record_runs(adapter, [c.clean for c in corruptions])  # everything: one row per fact
        corrupted = record_from(adapter, clean, [c.corrupted for c in corruptions],
                                [_first_changed(c) for c in corruptions], acts=() if denoise else COMPONENTS,
                                base=denoise)
    setups = []
    for i, c in enumerate(corruptions):
        o = c.target_id
        c_logits = corrupted.logits[corrupted.rows(i)]
        alt = c.alt_id
        if alt is None:
            mean_p = torch.softmax(c_logits.double(), -1).mean(0)
            mean_p[o] = -1.0
            alt = int(mean_p.argmax())
        clean_lp = torch.log_softmax(clean.logits[clean.rows(i)][0].double(), -1)
        m_clean = mean_metrics(row_metrics(clean.logits[clean.rows(i)], o, alt, clean_lp))
        m_corr = mean_metrics(row_metrics(c_logits, o, alt, clean_lp))
        if denoise:
            base, source, base_run, source_run = c.corrupted, c.clean, corrupted, clean
        else:
            base, source, base_run, source_run = c.clean, c.corrupted, clean, corrupted
        setups.append(TraceSetup(
            adapter, direction, base, source, base_run, source_run, i, i, o, alt, clean_lp, m_clean, m_corr,
            max(base.n_rows, source.n_rows), _first_changed(c), base_metrics=m_corr if denoise else m_clean,
        ))
    return setups


def build_setup(adapter: ModelAdapter, corruption: Corruption, direction: str) -> TraceSetup:
    return build_setups(adapter, [corruption], direction)[0]


def is_noop(setup: TraceSetup, site: Site) -> bool:
    """True when the patch provably leaves the last position's logits as in the base run: every patched
    position comes before the first corrupted token (both runs are identical there), or lies at the last
    layer but is not the last position."""
    last = setup.length - 1
    n_layers = setup.adapter.n_layers
    return all(p < setup.first_changed or (layer == n_layers - 1 and p != last) for p in site.positions
               for layer in site.layers)
