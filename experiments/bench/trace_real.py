"""Benchmark: CPU seconds per fact of exact gn tracing on a real-shape model, old code vs this code.

Not a test. One thread. The model is a randomly initialised Llama with 24 layers, d = 768 (~219M parameters,
trace_common.REAL_SHAPE); prompts are short real-style facts (7-9 tokens). Two maps:
- full: resid + mlp + attn, 4 metrics, window 1, every (layer, position);
- mlp@subject_last: the MLP map at the last subject token only (what layer choice needs). The old code cannot
  restrict positions in `trace_fact`; it is timed both ways: its whole MLP map (what the audit computed), and
  `patched_metrics` on exactly those L sites (the least its API allows).
"Before" runs the packages of git ref `--before` (default: the branch point from main) in a subprocess. Besides
CPU seconds, the work is counted free of machine load: block calls, row-positions through the blocks and the
FLOPs of every linear layer. With the single-thread matrix-multiply rate measured in the same process, the
FLOPs give the least CPU time any exact implementation of the same arithmetic could take, hence a bound on
the speed-up over the old code (`speedup_bound_at_gemm_peak`).

    python experiments/bench/trace_real.py [--facts 3] [--before REF] [--out real.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trace_common import (  # noqa: E402
    ROOT,
    LinearFlops,
    add_device_arg,
    checkout,
    gemm_peak_gflops,
    load,
    real_facts,
    real_shape_model,
    run_with,
    set_device,
    timed,
)


def worker(n_facts: int, full: bool, dev: str) -> dict:
    set_device(dev)
    torch.set_num_threads(1)
    import kdel.trace as kt
    from kdel.trace import TraceConfig

    model, tok, n_params = real_shape_model()
    table, facts = real_facts()
    facts = facts[:n_facts]
    new = hasattr(kt, "trace_many")
    res = {"code": "new" if new else "old", "n_params": n_params, "n_facts": len(facts), "threads": 1, "device": dev}
    mlp = dict(components=("mlp",), metrics=("prob",))
    if new:
        from kdel.trace import trace_many

        kt.trace_many(model, tok, facts[:1], table, TraceConfig(positions=("last",), **mlp))  # warm-up
        runs = {"mlp@subject_last": lambda: trace_many(model, tok, facts, table,
                                                       TraceConfig(positions=("subject_last",), **mlp)),
                "mlp map (all positions)": lambda: trace_many(model, tok, facts, table, TraceConfig(**mlp))}
        if full:
            runs["full"] = lambda: trace_many(model, tok, facts, table, TraceConfig())
    else:
        from kdel.models.adapter import ModelAdapter
        from kdel.trace.corrupt import gn_corruption
        from kdel.trace.patch import Site, build_setup

        try:
            from kdel.trace.dispatch import patched_metrics
        except ImportError:  # older code (the usual "before" refs): patched_metrics lived in kdel.trace.patch
            from kdel.trace.patch import patched_metrics

        def subject_last_sites():
            adapter = ModelAdapter(model, tok)
            for f in facts:
                c = gn_corruption(tok, f, adapter.embedding_matrix(), 10, 3.0, 0)
                setup = build_setup(adapter, c, "denoise")
                p = max(c.clean.subject_positions)
                patched_metrics(setup, [Site("mlp", (layer,), (p,)) for layer in range(adapter.n_layers)])

        kt.trace_fact(model, tok, facts[0], table, TraceConfig(components=("resid",), metrics=("prob",)))
        runs = {"mlp@subject_last": subject_last_sites,
                "mlp map (all positions)": lambda: [kt.trace_fact(model, tok, f, table, TraceConfig(**mlp))
                                                    for f in facts]}
        if full:
            runs["full"] = lambda: [kt.trace_fact(model, tok, f, table, TraceConfig()) for f in facts]
    work = {"calls": 0, "tokens": 0}  # block calls and row-positions through blocks: the work, free of load

    def count(_m, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        work["calls"] += 1
        work["tokens"] += h.shape[0] * h.shape[1]

    for layer in model.model.layers:
        layer.register_forward_pre_hook(count, with_kwargs=True)
    flops = LinearFlops(model)
    for name, fn in runs.items():
        work.update(calls=0, tokens=0)
        flops.flops = 0
        _, wall, cpu = timed(fn)
        res[name] = {"cpu_s_per_fact": cpu / len(facts), "wall_s_per_fact": wall / len(facts),
                     "block_calls_per_fact": work["calls"] / len(facts),
                     "block_tokens_per_fact": work["tokens"] / len(facts),
                     "linear_gflop_per_fact": flops.flops / 1e9 / len(facts)}
    flops.close()
    res["gemm_peak_gflops"] = gemm_peak_gflops(model.config.hidden_size, model.config.intermediate_size)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--facts", type=int, default=3)
    ap.add_argument("--before", default=None, help="git ref of the old code (default: merge-base with main)")
    ap.add_argument("--no-full", action="store_true", help="skip the full map (the slowest part)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out")
    add_device_arg(ap)
    args = ap.parse_args()
    set_device(args.device)
    if args.worker:
        print(json.dumps(worker(args.facts, not args.no_full, args.device)))
        return
    ref = args.before or subprocess.run(["git", "-C", str(ROOT), "merge-base", "HEAD", "main"], check=True,
                                        capture_output=True, text=True).stdout.strip()
    cmd = ([str(Path(__file__).resolve()), "--worker", "--facts", str(args.facts), "--device", args.device]
           + (["--no-full"] if args.no_full else []))
    res = {"load_before": load(), "before_ref": ref}
    res["after"] = json.loads(run_with(ROOT, cmd).strip().splitlines()[-1])
    res["before"] = json.loads(run_with(checkout(ref), cmd).strip().splitlines()[-1])
    res["load_after"] = load()
    maps = [k for k in res["after"] if isinstance(res["after"][k], dict)]
    peak = res["after"]["gemm_peak_gflops"]
    for k in maps:  # the least CPU time of this arithmetic, were every FLOP at the matrix-multiply peak
        a = res["after"][k]
        a["cpu_s_per_fact_at_gemm_peak"] = a["linear_gflop_per_fact"] / peak
        a["achieved_gflops"] = a["linear_gflop_per_fact"] / a["cpu_s_per_fact"]
    res["speedup_bound_at_gemm_peak"] = {k: res["before"][k]["cpu_s_per_fact"]
                                         / res["after"][k]["cpu_s_per_fact_at_gemm_peak"] for k in maps}
    # the old code's trace API and CLI could not restrict positions: a user wanting the MLP effect at the last
    # subject token traced the whole MLP map
    old_map = res["before"]["mlp map (all positions)"]["cpu_s_per_fact"]
    res["speedup_cpu_mlp_subject_last_vs_old_whole_mlp_map"] = old_map / res["after"]["mlp@subject_last"]["cpu_s_per_fact"]
    res["speedup_cpu"] = {k: res["before"][k]["cpu_s_per_fact"] / res["after"][k]["cpu_s_per_fact"] for k in maps}
    res["less_block_work"] = {k: res["before"][k]["block_tokens_per_fact"] / res["after"][k]["block_tokens_per_fact"]
                              for k in maps}
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
