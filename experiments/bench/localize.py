"""Benchmark: two-stage layer choice (attribution ranks, exact confirms the top k) vs exact-only choice.

Not a test. One thread. For each fact, `choose_site_layers` twice on the same facts (gn, denoising, prob, the
default window): two-stage and exact-only; reports how often they choose the same (site, layer) and the CPU
time of each, plus the time of what the audit computed before (the whole exact MLP map, all positions, whose
peak it used). Models: the trained toy model on the default KG, and a random real-shape Llama.

    python experiments/bench/localize.py --model MODEL --kg KG [--facts-n 100] [--real-facts 3]
        [--real-layers 24] [--out F]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trace_common import add_device_arg, load, real_facts, real_shape_model, set_device, timed, toy_model  # noqa: E402


def compare(model, tok, facts, table, top_k: int = 3) -> dict:
    from kdel.trace import TraceConfig, trace_many
    from kdel.trace.localize import choose_site_layers, default_window

    n = len(facts)
    choose_site_layers(model, tok, facts[:1], table)  # warm-up
    parts = {"two_stage": {}, "exact_only": {}}
    two, tw, tc = timed(lambda: choose_site_layers(model, tok, facts, table, top_k=top_k, two_stage=True,
                                                   timings=parts["two_stage"]))
    exact, ew, ec = timed(lambda: choose_site_layers(model, tok, facts, table, two_stage=False,
                                                     timings=parts["exact_only"]))
    window = default_window(model.config.num_hidden_layers)
    cfg = TraceConfig(components=("mlp",), metrics=("prob",), window=window)
    _, mw, mc = timed(lambda: trace_many(model, tok, facts, table, cfg))
    same = [(a.site, a.layer) == (b.site, b.layer) for a, b in zip(two, exact)]
    return {
        "n_facts": n, "window": window, "top_k": top_k,
        "same_choice": sum(same) / n,
        "same_layer_given_same_site": (sum(s for s, a, b in zip(same, two, exact) if a.site == b.site)
                                       / max(1, sum(a.site == b.site for a, b in zip(two, exact)))),
        "cpu_s_per_fact": {"two_stage": tc / n, "exact_only": ec / n, "full_exact_mlp_map": mc / n},
        "wall_s_per_fact": {"two_stage": tw / n, "exact_only": ew / n, "full_exact_mlp_map": mw / n},
        "speedup_cpu_vs_exact_only": ec / tc,
        # CPU s per fact of each part; the bound: two-stage can be at most exact-only / (its recorded runs +
        # attribution) times cheaper, however cheap its confirmation
        "cpu_s_per_fact_by_part": {k: {p: v / n for p, v in d.items()} for k, d in parts.items()},
        "speedup_bound_if_confirmation_were_free": ec / max(1e-12, parts["two_stage"].get("recorded_runs", 0)
                                                            + parts["two_stage"].get("attribution", 0)),
        "speedup_cpu_vs_full_mlp_map": mc / tc,
        "exact_only_choices": dict(Counter(f"{c.site}@{c.layer}" for c in exact).most_common()),
        "fallbacks": {"two_stage": sum(c.fallback for c in two), "exact_only": sum(c.fallback for c in exact)},
        "excluded_embedding_like": sum(any("embedding" in r for r in c.excluded.values()) for c in exact),
        "disagreements": [{"fact": a.fact_id, "two_stage": [a.site, a.layer, a.effect],
                           "exact_only": [b.site, b.layer, b.effect]}
                          for a, b, s in zip(two, exact, same) if not s][:20],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--kg")
    ap.add_argument("--facts-n", type=int, default=100)
    ap.add_argument("--real-facts", type=int, default=3)
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--real-layers", default="24", help="depths of the real-shape model, comma-separated (24: the "
                    "standard shape; fewer layers show where two-stage stops paying)")
    ap.add_argument("--out")
    add_device_arg(ap)
    args = ap.parse_args()
    set_device(args.device)
    torch.set_num_threads(1)
    res = {"device": args.device, "load_start": load()}
    if args.model:
        model, tok, table, facts = toy_model(args.model, args.kg)
        res["toy"] = compare(model, tok, facts[: args.facts_n], table, args.top_k)
    if args.real_facts:
        for layers in [int(x) for x in args.real_layers.split(",")]:
            model, tok, n_params = real_shape_model(num_hidden_layers=layers)
            table, facts = real_facts()
            key = "real_shape" if layers == 24 else f"real_shape_{layers}_layers"
            res[key] = {"n_layers": layers, "n_params": n_params,
                        **compare(model, tok, facts[: args.real_facts], table, args.top_k)}
    res["load_end"] = load()
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
