"""Benchmark: ms per fact for the full resid+mlp+attn trace map, exact batched tracer vs ROME's per-site loop.

Not a test. One thread. Also checks that both give the same raw values, and (with a trained model) reports
where the model looks facts up: the peak MLP layer at the last subject token and at the last token.

    python experiments/bench/trace_speed.py --model MODEL_DIR --kg KG_DIR [--facts-n 20] [--peaks-n 0]
    python experiments/bench/trace_speed.py --random      # 4-layer 128-wide random GPT-2 (no trained model)
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import numpy as np
import torch


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--kg")
    ap.add_argument("--random", action="store_true")
    ap.add_argument("--facts-n", type=int, default=20, help="facts timed (loop and batched)")
    ap.add_argument("--peaks-n", type=int, default=0, help="facts traced for the peak-layer table (0 = all known)")
    ap.add_argument("--corruption", default="gn")
    ap.add_argument("--out", help="write the numbers as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from kdel.trace import TraceConfig, known_mask, trace_fact

    if args.random:
        model, tok, table, facts = _random_setup()
        peaks = False
    else:
        from kdel.facts import load_fact_table
        from kdel.models.loading import load_model

        table = load_fact_table(kg=args.kg)
        model, tok = load_model(args.model, "cpu", kg_hash=table.source_hash)
        known = known_mask(model, tok, table.facts)
        facts = [f for f, k in zip(table.facts, known) if k]
        peaks = True
        print(f"model knows {len(facts)}/{len(table.facts)} facts")
    timed = facts[: args.facts_n]
    res = {"n_facts_timed": len(timed), "model": args.model or "random gpt2 4x128", "corruption": args.corruption}
    for batched in (False, True):
        cfg = TraceConfig(corruption=args.corruption, batched=batched, fallback_to_gn=True)
        trace_fact(model, tok, timed[0], table, cfg)  # warm-up
        t0 = time.perf_counter()
        out = [trace_fact(model, tok, f, table, cfg) for f in timed]
        ms = (time.perf_counter() - t0) * 1000 / len(timed)
        res["batched_ms" if batched else "loop_ms"] = ms
        res["traces_batched" if batched else "traces_loop"] = out
    err = max(np.abs(a.patched[c][m] - b.patched[c][m]).max() for a, b in zip(res.pop("traces_loop"),
              res.pop("traces_batched")) for c in a.patched for m in a.patched[c])
    res["max_abs_diff_float32"] = float(err)
    res["speedup"] = res["loop_ms"] / res["batched_ms"]
    print(json.dumps(res, indent=2))
    if peaks:
        todo = facts if args.peaks_n == 0 else facts[: args.peaks_n]
        bins = dict(zip([f.id for f in table.facts], table.subject_bins(5)))
        cfg = TraceConfig(corruption=args.corruption, components=("mlp", "resid"), metrics=("prob",), fallback_to_gn=True)
        traces = [trace_fact(model, tok, f, table, cfg) for f in todo]
        table_rows = {}
        for site in ("subject_last", "last"):
            c = Counter(t.peak_layer(site, "mlp", "prob") for t in traces)
            by_bin = {b: Counter(t.peak_layer(site, "mlp", "prob") for t in traces if bins[t.fact_id] == b)
                      for b in sorted(set(bins.values()))}
            table_rows[site] = {"all": dict(sorted(c.items())),
                                "by_bin": {b: dict(sorted(v.items())) for b, v in by_bin.items()}}
        mean_ie = {site: [float(np.mean([t.normalized("mlp", "prob")[layer, t.position(site)] for t in traces]))
                          for layer in range(traces[0].n_layers)] for site in ("subject_last", "last")}
        mean_ie_resid = {site: [float(np.mean([t.normalized("resid", "prob")[layer, t.position(site)]
                                               for t in traces])) for layer in range(traces[0].n_layers)]
                         for site in ("subject_last", "last")}
        res["peaks"] = {"n_facts": len(traces), "peak_layer_mlp": table_rows,
                        "mean_normalized_mlp_prob": mean_ie, "mean_normalized_resid_prob": mean_ie_resid,
                        "mean_clean_prob": float(np.mean([t.clean["prob"] for t in traces])),
                        "mean_corrupted_prob": float(np.mean([t.corrupted["prob"] for t in traces]))}
        print(json.dumps(res["peaks"], indent=2))
    if args.out:
        from kdel.io import atomic_write_json

        atomic_write_json(args.out, res)


if __name__ == "__main__":
    main()
