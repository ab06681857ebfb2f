"""Measure the fluency checks (kdel.models.fluency) on ordinary edits and on deliberately wrecking ones, to set
the `wrecked` thresholds (docs/fluency.md).

    python experiments/fluency/thresholds.py --model MODEL --kg KG [--facts 10] [--json out.json]

Ordinary edits: ROME and r-ROME erase of `--facts` recalled facts (seeded sample), at every layer and both
sites, with default hyperparameters. Wrecking edits: a Gaussian ΔW of norm c·‖W‖ added to one layer's MLP
output matrix, c in --scales, at every layer. For each edit: perplexity ratio (held-out corpus lines),
relative drop of generation entropy, and `unrelated` accuracy after (DESIGN §12's collateral bound: < 0.9 is
wrecked). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def unrelated_accuracy(model, tok, table, fact_id, pool, base) -> float:
    from kdel.models.scoring import score_targets

    ids = [u for u in table.probe_groups(fact_id, pool)["unrelated"] if base[u]]
    if not ids:
        return 1.0
    s = score_targets(model, tok, [table.fact(u).prompt for u in ids], [table.fact(u).target for u in ids])
    return float(s.recalled.mean())


def summarise(rows: list[dict]) -> dict:
    ratio = [r["fluency_ppl_ratio"] for r in rows]
    drop = [r["fluency_entropy_drop"] for r in rows]
    unrel = [r["unrelated"] for r in rows]
    q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]  # noqa: E731
    return {"n": len(rows), "ppl_ratio_median": statistics.median(ratio), "ppl_ratio_p95": q(ratio, 0.95),
            "ppl_ratio_max": max(ratio), "entropy_drop_median": statistics.median(drop),
            "entropy_drop_p95": q(drop, 0.95), "entropy_drop_max": max(drop),
            "unrelated_below_0.9": sum(u < 0.9 for u in unrel), "flagged": sum(r["fluency_wrecked"] for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--kg", required=True)
    ap.add_argument("--facts", type=int, default=10)
    ap.add_argument("--scales", default="0.1,0.3,1,3,10")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from kdel.delete.base import DeletionRequest, EditContext, apply_deletion, get_method
    from kdel.delete.corpus import corpus_of
    from kdel.facts import load_fact_table
    from kdel.models.fluency import FluencyCheck
    from kdel.models.loading import load_model_for_table
    from kdel.models.scoring import score_targets

    torch.set_num_threads(args.threads)
    table = load_fact_table(kg=args.kg)
    model, tok = load_model_for_table(args.model, table)
    corpus = corpus_of(table)
    t0 = time.perf_counter()
    check = FluencyCheck(model, tok, corpus.heldout_lines(), prompt_lines=corpus.lines)
    before_s = time.perf_counter() - t0
    print(f"prompts: {check.prompts}\nbefore: entropy {check.before.entropy:.3f} bits, perplexity "
          f"{check.before.perplexity:.3f} on {check.before.perplexity_tokens} tokens ({before_s:.2f} s)")
    base = score_targets(model, tok, [f.prompt for f in table.facts], [f.target for f in table.facts]).recalled
    recalled = [f.id for f in table.facts if base[f.id]]
    random.Random(0).shuffle(recalled)
    facts = recalled[: args.facts]
    pool = table.unrelated_sample(200, seed=0)
    ctx = EditContext(model, tok, table, cache_dir=None)
    n_layers = ctx.adapter.n_layers
    groups: dict[str, list[dict]] = {}
    for name in ("rome", "r-rome"):
        method = get_method(name)
        for site in ("subject_last", "last"):
            for layer in range(n_layers):
                for fid in facts:
                    handle, record = apply_deletion(method, ctx, DeletionRequest([table.fact(fid)], "erase",
                                                                                 layer=layer, site=site))
                    try:
                        row = check.after(model)
                        row["unrelated"] = unrelated_accuracy(model, tok, table, fid, pool, base)
                        row["delta_norm"] = record.total_delta_norm
                    finally:
                        handle.revert()
                    groups.setdefault(f"{name} {site} L{layer}", []).append(row)
    gen = torch.Generator().manual_seed(0)
    for layer in range(n_layers):
        w = ctx.adapter.mlp_out_weight(layer)
        for c in (float(x) for x in args.scales.split(",")):
            noise = torch.randn(w.shape, generator=gen, dtype=torch.float64)
            delta = noise * (c * float(w.norm()) / float(noise.norm()))
            original = w.detach().clone()
            ctx.adapter.add_to_mlp_out(layer, delta)
            try:
                t0 = time.perf_counter()
                row = check.after(model)
                row["seconds"] = time.perf_counter() - t0
                row["unrelated"] = unrelated_accuracy(model, tok, table, facts[0], pool, base)
            finally:
                with torch.no_grad():
                    w.copy_(original)
            groups.setdefault(f"random ΔW {c:g}·‖W‖", []).append(row)
    summary = {k: summarise(v) for k, v in groups.items()}
    cols = ["n", "ppl_ratio_median", "ppl_ratio_p95", "ppl_ratio_max", "entropy_drop_median", "entropy_drop_p95",
            "entropy_drop_max", "unrelated_below_0.9", "flagged"]
    print("| edit | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 1))
    for k, s in summary.items():
        print(f"| {k} | " + " | ".join(f"{s[c]:.3g}" if isinstance(s[c], float) else str(s[c]) for c in cols) + " |")
    ordinary = [r for k, v in groups.items() if not k.startswith("random") for r in v]
    print("all ordinary edits:", json.dumps(summarise(ordinary)))
    if args.json:
        Path(args.json).write_text(json.dumps({"before": check.before.info(), "prompts": check.prompts,
                                               "summary": summary, "groups": groups}, indent=1, default=str))


if __name__ == "__main__":
    main()
