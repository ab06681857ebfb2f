"""Which sites share which block calls (kdel.trace.engine runs them): batches, waves and chunks.

A fixed function of the sites and the model, never of timings: the batches decide the rounding of every result,
so they must be the same on every run (a size chosen by timing once made a 2-worker and a 1-process audit of
the same cases differ in their last digits).
- *batches*: sites of one first layer l0 and number of positions, sharing a stage-2 length n;
- *waves*: batches of one n and consecutive l0, whose stage 2 runs layer by layer in one block call per layer;
- *chunks*: (batch, last hidden state) pairs unembedded in one call.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from kdel.trace.patch import Site, TraceSetup


@dataclass
class Item:
    job: int
    k: int  # site index within its job
    site: Site
    l0: int
    pmin: int
    length: int  # the fact's prompt length T
    start: int = 0  # stage 2 computes positions start .. T-1 (start <= pmin: a batch shares one length T - start)


UNEMBED_ROWS = 256  # rows unembedded per call (a row's logits are the vocabulary's size)


def chunks(done: list, rows: int) -> list[list]:
    """Consecutive (group, last hidden) pairs in chunks of at most `rows` rows (at least one pair each)."""
    out, cur, k = [], [], 0
    for pair in done:
        if cur and k + len(pair[1]) > rows:
            out.append(cur)
            cur, k = [], 0
        cur.append(pair)
        k += len(pair[1])
    return out + ([cur] if cur else [])


def waves(parts: list[tuple], max_tokens: int) -> list[list]:
    """Batches that need stage 2, as waves: the same length n, consecutive in l0, at most `max_tokens`
    row-positions in all (a wave's last layers hold every row at once)."""
    by_n: dict[int, list] = defaultdict(list)
    for part in sorted(parts, key=lambda x: x[0]):
        by_n[part[2].n].append(part)
    out = []
    for n, ps in sorted(by_n.items()):
        wave, tokens = [], 0
        for part in ps:
            t = len(part[2].base) * n
            if wave and tokens + t > max_tokens:
                out.append(wave)
                wave, tokens = [], 0
            wave.append(part)
            tokens += t
        out.append(wave)
    return out


def token_budget(setup: TraceSetup, budget_bytes: float) -> int:
    cfg = setup.adapter.model.config
    d = setup.adapter.d_model
    d_ff = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * d
    el = setup.base_run.block_inputs[0].element_size()
    return max(1, int(budget_bytes // (el * (10 * d + 3 * d_ff))))


def batches(items: list[Item], rows_of, min_tokens: int, max_tokens: int) -> list[tuple[int, list[Item]]]:
    """Split one (l0, npos) group into batches (n, items). Items needing the longest stage 2 come first; a batch
    computes n = its first item's T - pmin positions for every row (from T - n: earlier positions of a shorter
    site are recomputed unchanged), and takes items until it holds `min_tokens` row-positions (fewer, larger
    calls: a block call has a fixed cost) or `max_tokens` (memory). Items with equal (pmin, T) stay together."""
    items = sorted(items, key=lambda it: (-(it.length - it.pmin), it.length, it.pmin, it.job))
    out: list[tuple[int, list[Item]]] = []
    rest = items
    while rest:
        n = rest[0].length - rest[0].pmin
        batch, left, tokens = [], [], 0
        for it in rest:
            m = it.length - it.pmin
            fits = it.length >= n and tokens + n * rows_of(it) <= max_tokens
            full = tokens >= min_tokens and m < n
            if fits and not full or not batch:
                it.start = it.length - n
                batch.append(it)
                tokens += n * rows_of(it)
            else:
                left.append(it)
        out.append((n, batch))
        rest = left
    return out


MIN_TOKENS = {"cpu": (16, 0.0), "cuda": (1600, 3.0e9)}  # (a, b): a + b / (parameters of one block)


def min_tokens_for(adapter) -> int:
    """Row-positions a batch is filled to with sites of shorter stage 2 (which then recompute unchanged base
    positions): a + b / P for a block of P parameters, in [16, 2048]. On CPU the floor, 16: waves already
    merge the batches of every first layer into large block calls, so merging lengths only adds arithmetic
    (measured: toy model the same time at 16 as at 836; real-shape Llama 2.7-2.8 vs 3.2 CPU s per fact at
    101). On CUDA, where a call's fixed cost is larger, 1600 + 3e9 / P (a guess: no GPU was measured).
    Never measured at run time: a size chosen from timings changes with the machine's load, and with it the
    batches and the rounding of the results (an earlier version did; a 2-worker and a 1-process audit then
    differed in their last digits)."""
    params = sum(p.numel() for p in adapter.layer(0).parameters())
    a, b = MIN_TOKENS["cuda" if adapter.device.type == "cuda" else "cpu"]
    return int(min(2048, max(16, a + b / max(params, 1))))
