"""Benchmark: the exact tracer vs ROME's per-site loop, ms per fact for the full resid+mlp+attn gn map.

Not a test. One thread, one process: each run times the loop and then the exact tracer on the same facts (the
exact tracer batches all of them: `trace_many`); the speed-up is reported per run and as the median of the runs.
Also: the max |difference| of their raw values (float32), an equality check in float64 on a few facts, where the
exact tracer's time goes (`--profile`), and (with a trained model) the peak MLP layers.

    python experiments/bench/trace_speed.py --model MODEL --kg KG [--facts-n 30] [--runs 3] [--profile] [--out F]
    python experiments/bench/trace_speed.py --random      # 4-layer 128-wide random GPT-2 (no trained model)
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trace_common import add_device_arg, load, median, set_device, timed, toy_model  # noqa: E402

PROFILE = {  # category -> (module file, function); times are cumulative, stage 2 excludes the prefix cache
    "corrupted inputs (tokenize, gn noise)": ("api.py", "_corruption"),
    "clean run recorded (1 row per fact)": ("record.py", "record_runs"),
    "corrupted run recorded (from the first corrupted token)": ("record.py", "record_from"),
    "stage 1: patched layer at the patched position": ("engine.py", "_stage1"),
    "stage 2: later layers, later positions (blocks)": ("engine.py", "_stage2"),
    "stage 2: cached keys/values of earlier positions": ("blocks.py", "update"),
    "final norm + unembedding": ("engine.py", "_logits"),
    "metrics (float64)": ("engine.py", "_metrics"),
}


def _random_setup():
    from transformers import GPT2Config, GPT2LMHeadModel

    from kdel.facts import Fact, FactTable
    from kdel.models.tokenizer import build_word_tokenizer

    sentences = ["Maria Lopez works with John Smith", "John Smith works with Ann Lee", "Ann Lee works with Peter Pan"]
    tok = build_word_tokenizer(sentences)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=128, n_layer=4, n_head=4)).eval()
    facts = [Fact(i, s.split(" works with ")[0], s.split(" works with ")[1], "works_with",
                  (s.split(" works with ")[0] + " works with",)) for i, s in enumerate(sentences)]
    return model, tok, FactTable(facts, "facts", "random"), facts


def _max_diff(xs, ys) -> float:
    return float(max(np.nanmax(np.abs(a.patched[c][m] - b.patched[c][m]))
                     for a, b in zip(xs, ys) for c in a.patched for m in a.patched[c]))


def profile(model, tok, facts, table, cfg) -> dict:
    from kdel.trace import trace_many

    prof = cProfile.Profile()
    _, wall, _ = timed(lambda: prof.runcall(trace_many, model, tok, facts, table, cfg))
    stats = pstats.Stats(prof).stats
    cum = {}
    for (file, _line, fn), (_cc, _nc, _tt, ct, _callers) in stats.items():
        for name, (f, func) in PROFILE.items():
            if fn == func and file.endswith(f"kdel/trace/{f}"):
                cum[name] = cum.get(name, 0.0) + ct
    total = sum(ct for (file, _l, fn), (_a, _b, _c, ct, _d) in stats.items()
                if fn == "trace_many" and file.endswith("kdel/trace/api.py"))
    stage2 = "stage 2: later layers, later positions (blocks)"
    cum[stage2] = cum.get(stage2, 0.0) - cum.get("stage 2: cached keys/values of earlier positions", 0.0)
    cum["other (grouping, indexing, assembling traces)"] = total - sum(cum.values())
    n = len(facts)
    return {"total_ms_per_fact_under_profiler": 1000 * total / n, "wall_ms_per_fact": 1000 * wall / n,
            "rows": {k: {"ms_per_fact": 1000 * v / n, "share": v / total} for k, v in cum.items()}}


def peaks(model, tok, table, facts, corruption: str, window: int = 1) -> dict:
    from kdel.trace import TraceConfig, trace_many

    cfg = TraceConfig(corruption=corruption, components=("mlp", "resid"), metrics=("prob",), fallback_to_gn=True,
                      window=window)
    traces = trace_many(model, tok, facts, table, cfg)
    out = {"n_facts": len(traces), "window": window, "mean_clean_prob": float(np.mean([t.clean["prob"] for t in traces])),
           "mean_corrupted_prob": float(np.mean([t.corrupted["prob"] for t in traces]))}
    for site in ("subject_last", "last"):
        out[f"peak_layer_mlp@{site}"] = dict(sorted(Counter(t.peak_layer(site) for t in traces).items()))
        for comp in ("mlp", "resid"):
            out[f"mean_normalized_{comp}_prob@{site}"] = [
                float(np.mean([t.normalized(comp, "prob")[layer, t.position(site)] for t in traces]))
                for layer in range(traces[0].n_layers)]
        out[f"peak_effect_median@{site}"] = float(np.median([t.peak(site).effect for t in traces]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--kg")
    ap.add_argument("--random", action="store_true")
    ap.add_argument("--facts-n", type=int, default=30, help="facts timed (loop and exact)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--check-n", type=int, default=3, help="facts compared in float64")
    ap.add_argument("--profile", action="store_true", help="where the exact tracer's time goes")
    ap.add_argument("--peaks-n", type=int, default=0, help="facts traced for the peak-layer table (0 = none)")
    ap.add_argument("--window", type=int, default=1, help="window of the peak-layer table")
    ap.add_argument("--corruption", default="gn")
    ap.add_argument("--out", help="write the numbers as JSON here")
    add_device_arg(ap)
    args = ap.parse_args()
    set_device(args.device)
    torch.set_num_threads(1)
    from kdel.trace import TraceConfig, trace_many

    if args.random:
        model, tok, table, facts = _random_setup()
        model.to(args.device)
    else:
        model, tok, table, facts = toy_model(args.model, args.kg)
        print(f"model knows {len(facts)}/{len(table.facts)} facts", file=sys.stderr)
    timed_facts = facts[: args.facts_n]
    res = {"n_facts_timed": len(timed_facts), "model": args.model or "random gpt2 4x128", "threads": 1,
           "device": args.device,
           "corruption": args.corruption, "map": "resid+mlp+attn, 4 metrics, window 1", "load_start": load()}
    loop_cfg = TraceConfig(corruption=args.corruption, batched=False, fallback_to_gn=True)
    fast_cfg = TraceConfig(corruption=args.corruption, fallback_to_gn=True)
    if args.runs:
        trace_many(model, tok, timed_facts[:2], table, loop_cfg)  # warm-up
        trace_many(model, tok, timed_facts[:2], table, fast_cfg)
    runs = []
    for _ in range(args.runs):
        slow, lw, lc = timed(lambda: trace_many(model, tok, timed_facts, table, loop_cfg))
        fast, fw, fc = timed(lambda: trace_many(model, tok, timed_facts, table, fast_cfg))
        n = len(timed_facts)
        runs.append({"loop_ms": 1000 * lw / n, "exact_ms": 1000 * fw / n, "loop_cpu_ms": 1000 * lc / n,
                     "exact_cpu_ms": 1000 * fc / n, "speedup": lw / fw, "speedup_cpu": lc / fc, "load": load()})
        res["max_abs_diff_float32"] = _max_diff(slow, fast)
    res["runs"] = runs
    if runs:
        res["median"] = {k: median([r[k] for r in runs]) for k in runs[0] if k != "load"}
    if args.check_n:
        m64 = model.double()
        check = timed_facts[: args.check_n]
        res["max_abs_diff_float64"] = _max_diff(trace_many(m64, tok, check, table, loop_cfg),
                                                trace_many(m64, tok, check, table, fast_cfg))
        model.float()
    from kdel.models.adapter import ModelAdapter
    from kdel.trace.schedule import min_tokens_for

    res["batch_min_tokens"] = min_tokens_for(ModelAdapter(model, tok))
    if args.profile:
        res["profile"] = profile(model, tok, timed_facts, table, fast_cfg)
    if args.peaks_n:
        res["peaks"] = peaks(model, tok, table, facts[: args.peaks_n], args.corruption, args.window)
    res["load_end"] = load()
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
