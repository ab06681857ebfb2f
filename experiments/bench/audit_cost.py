"""Benchmark: cost of one audit case vs one batched forward pass over all of that case's probe prompts.

DESIGN §10 target: (case time − edit time) ≤ 3 × one plain batched forward over the same prompts.
The forward baseline is `model(input_ids, attention_mask)` on the case's padded prompt batches (the same
batches the evaluation uses) with nothing else; the case time is everything `CaseExecutor.run` does
(apply the edit, one scoring pass, revert, verify, all metrics). Reported as medians over cases.

    python experiments/bench/audit_cost.py --model MODEL --kg KG [--method rome] [--cases 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def plain_forward(model, encoded, pad_id) -> float:
    from kdel.models.scoring import _auto_batch_size, _pad_batch

    lengths = [len(p) + len(t) for p, t in encoded]
    order = np.argsort(lengths, kind="stable")
    vocab = int(model.get_output_embeddings().weight.shape[0])
    bs = _auto_batch_size(max(lengths), vocab)
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(encoded), bs):
            rows = order[start: start + bs]
            ids, mask = _pad_batch([encoded[r][0] + encoded[r][1] for r in rows], pad_id, "cpu")
            model(input_ids=ids, attention_mask=mask)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--kg", required=True)
    ap.add_argument("--method", default="rome")
    ap.add_argument("--site", default="last")
    ap.add_argument("--layer", type=int, default=None, help="default: the middle layer")
    ap.add_argument("--cases", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()

    from kdel.audit.cases import AuditConfig, build_cases, sample_targets, trace_targets
    from kdel.audit.evaluate import BaseScores, new_target_rows
    from kdel.audit.execute import CaseExecutor
    from kdel.facts import load_fact_table
    from kdel.models.loading import load_model
    from kdel.runtime import set_threads

    set_threads(args.threads)
    table = load_fact_table(kg=args.kg)
    model, tok = load_model(args.model)
    n_layers = model.config.num_hidden_layers
    layer = n_layers // 2 if args.layer is None else args.layer
    config = AuditConfig(methods=(args.method,), sites=(args.site,), layers=(layer,), per_bin=max(1, args.cases // 5),
                         tracing_effect=False, unrelated_size=100)
    config.validate()
    t0 = time.perf_counter()
    base = BaseScores.compute(model, tok, table, table.unrelated_sample(config.unrelated_size, config.seed))
    t_base = time.perf_counter() - t0
    targets = sample_targets(table, base.canonical_recalled(), config)[: args.cases]
    specs = build_cases(table, targets, trace_targets(model, tok, table, targets, config, n_layers, False), config,
                        n_layers)
    ex = CaseExecutor(model, tok, table, config, base, cache_dir=Path("/tmp/kdel-bench-cache"))
    ex.run(specs[0])  # warm-up (and the method's key statistics, cached)
    rows = []
    for spec in specs:
        doc = ex.run(spec).to_json()
        fact = table.fact(spec.fact_ids[0])
        r = base.rows
        union = list(r.canonical) + [x for x in r.train[fact.id] + r.para[fact.id] if x not in set(r.canonical)]
        enc = [r.encoded[i] for i in union]
        if spec.new_targets:
            enc += new_target_rows(tok, fact, spec.new_targets[0])
        fwd = min(plain_forward(model, enc, base.pad_id) for _ in range(3))
        t = doc["timing"]
        rows.append({"total_s": t["total_s"], "edit_s": t["edit_s"] or 0.0, "forward_s": fwd, "n_rows": len(enc)})
    med = {k: statistics.median(x[k] for x in rows) for k in rows[0]}
    ratio = statistics.median((x["total_s"] - x["edit_s"]) / x["forward_s"] for x in rows)
    result = {
        "method": args.method, "facts": len(table), "cases": len(rows), "threads": args.threads,
        "base_scores_s": t_base, "median_case_s": med["total_s"], "median_edit_s": med["edit_s"],
        "median_forward_s": med["forward_s"], "median_rows": med["n_rows"],
        "median_overhead_over_forward": ratio,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
