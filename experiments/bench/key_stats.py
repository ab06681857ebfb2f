"""Benchmark: key statistics that stop at the edited layer, against one full forward over the same tokens.

A randomly initialised Llama-family model (built here from a LlamaConfig: nothing is downloaded; default 24
layers, hidden 512, MLP 1408, vocabulary 32000: 110M parameters) and a synthetic corpus of random token ids
(default 10,240 tokens in sequences of 128). In one process, each phase measured for process CPU time and for
peak RSS (sampled every 5 ms by a thread; freed heap is returned to the OS between phases with malloc_trim):
  * `full forward`: model(input_ids, attention_mask) over every batch (logits included), nothing recorded;
  * `keystats L=l`: kdel's streamed pass for one layer l (early, middle, late): the forward stops after layer l's
    key is recorded, k kᵀ accumulated in float64;
  * `keystats all L`: one pass for every layer (what MEMIT's window or an audit's layer list uses);
  * `old path L=mid` (with --old): the whole model runs (unembedding included) for one layer's statistics.
Targets (issue 14): cost ≤ (l + 1)/L of a full forward + 0.10; peak RSS ≤ model + 0.5 GB.

    python experiments/bench/key_stats.py [--threads 1] [--old] [--json out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def release_heap() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: RSS may include freed memory of earlier phases
        pass


class PeakRSS:
    """Peak resident set size while the block runs (sampled by a thread every `interval` seconds)."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def measure(fn) -> dict:
    release_heap()
    base = rss_bytes()
    with PeakRSS() as peak:
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"cpu_s": cpu, "wall_s": wall, "rss_before": base, "rss_peak": peak.peak}


def build(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
                      max_position_embeddings=args.seq, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(cfg).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def corpus_ids(args) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    n = args.tokens // args.seq
    body = torch.randint(3, args.vocab, (n, args.seq - 1), generator=g)
    return [[1] + row for row in body.tolist()]  # BOS + random tokens, like a tokenized line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--intermediate", type=int, default=1408)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--tokens", type=int, default=10240)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32, help="sequences per forward (also capped at 4096 tokens)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--old", action="store_true", help="also time the old whole-model path at the middle layer")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from kdel.delete.covariance import MAX_BATCH_TOKENS, _batches, second_moments
    from kdel.models.adapter import ModelAdapter
    from kdel.models.scoring import _pad_batch

    torch.set_num_threads(args.threads)
    rss_start = rss_bytes()
    model = build(args)
    adapter = ModelAdapter(model)
    ids = corpus_ids(args)
    n_tokens = sum(map(len, ids))
    n_params = sum(p.numel() for p in model.parameters())
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    L = args.layers
    per10k = 10_000 / n_tokens

    @torch.no_grad()
    def full_forward():
        for chunk in _batches(ids, args.batch, MAX_BATCH_TOKENS):
            x, mask = _pad_batch(chunk, 0, "cpu")
            model(input_ids=x, attention_mask=mask, use_cache=False)

    second_moments(adapter, ids[:2], [0], 0, args.batch)  # warm-up (first-call allocations, lazy imports)
    full_forward_small = ids[:2]
    with torch.no_grad():
        x, mask = _pad_batch(full_forward_small, 0, "cpu")
        model(input_ids=x, attention_mask=mask, use_cache=False)

    release_heap()
    rss_model = rss_bytes()  # the process with the model built and warmed up: the baseline of every phase
    early, mid, late = 0, L // 2, L - 1
    phases = [(f"keystats L={early}", [early]), (f"keystats L={mid}", [mid]), (f"keystats L={late}", [late]),
              ("full forward", None), (f"keystats all {L} layers", list(range(L)))]
    if args.old:
        phases.append((f"old path L={mid}", "old"))
    rows = []
    for name, layers in phases:
        if layers is None:
            m = measure(full_forward)
        elif layers == "old":
            m = measure(lambda: second_moments(adapter, ids, [mid], 0, args.batch, stop_early=False))
        else:
            m = measure(lambda layers=layers: second_moments(adapter, ids, layers, 0, args.batch))
        m.update(name=name, layers=layers if isinstance(layers, list) else None)
        rows.append(m)
        print(f"{name}: {m['cpu_s']:.1f} s CPU, peak RSS {m['rss_peak'] / 2**30:.2f} GiB", flush=True)
    full = next(r for r in rows if r["name"] == "full forward")
    print(f"\nmodel: Llama, {L} layers, hidden {args.hidden}, MLP {args.intermediate}, vocab {args.vocab}: "
          f"{n_params / 1e6:.1f}M parameters ({model_bytes / 2**30:.2f} GiB float32); corpus {n_tokens} tokens "
          f"({len(ids)} x {args.seq}); torch threads {args.threads}; RSS before the model {rss_start / 2**30:.2f} GiB, "
          f"with it {rss_model / 2**30:.2f} GiB\n")
    print("| phase | CPU s / 10k tokens | × full forward | target (l+1)/L + 0.10 | peak RSS GiB | peak − (process with model) GiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["cpu_s"] / full["cpu_s"]
        deepest = max(r["layers"]) if r["layers"] else None
        single = r["layers"] is not None and len(r["layers"]) == 1  # the target is per layer: one-layer passes
        target = f"{(deepest + 1) / L + 0.10:.3f}" if single else "—"
        r.update(ratio=ratio, cpu_per_10k=r["cpu_s"] * per10k, over_model=(r["rss_peak"] - rss_model) / 2**30)
        print(f"| {r['name']} | {r['cpu_per_10k']:.1f} | {ratio:.3f} | {target} | {r['rss_peak'] / 2**30:.2f} | "
              f"{r['over_model']:+.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "params": n_params, "model_bytes": model_bytes,
                                               "tokens": n_tokens, "rss_start": rss_start, "rss_model": rss_model,
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
