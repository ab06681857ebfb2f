"""Benchmark: attribution patching vs exact activation patching, per fact, and where the estimate fails.

Not a test. One thread. For each fact, direction and component: Spearman and Pearson correlation between the
attribution map and the exact map of normalised effects over every (layer, position) cell that can change
(positions from the first corrupted token on); agreement of the argmax layer at the last subject token and at
the last token; the mean |attribution - exact| per layer (early layers are where the linear estimate is
worst); the speed-up (the same full map, exact vs attribution). Models: the trained toy model on the default
KG, and a random real-shape Llama (trace_common.REAL_SHAPE).

    python experiments/bench/attribution.py --model MODEL --kg KG [--facts-n 30] [--real-facts 3] [--out F]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trace_common import (  # noqa: E402
    add_device_arg,
    load,
    median,
    real_facts,
    real_shape_model,
    set_device,
    timed,
    toy_model,
)

COMPONENTS = ("resid", "mlp", "attn")


def _corr(x: np.ndarray, y: np.ndarray, f) -> float | None:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return None
    return float(f(x[ok], y[ok])[0])


def compare(model, tok, facts, table, direction: str, metrics=("prob", "logit_diff")) -> dict:
    from kdel.trace import TraceConfig, trace_many

    cfg = dict(direction=direction, metrics=tuple(metrics))
    trace_many(model, tok, facts[:1], table, TraceConfig(method="attribution", **cfg))  # warm-up
    exact, ew, ec = timed(lambda: trace_many(model, tok, facts, table, TraceConfig(**cfg)))
    approx, aw, ac = timed(lambda: trace_many(model, tok, facts, table, TraceConfig(method="attribution", **cfg)))
    out = {"n_facts": len(facts), "exact_cpu_s_per_fact": ec / len(facts), "attribution_cpu_s_per_fact": ac / len(facts),
           "speedup_cpu": ec / ac, "speedup_wall": ew / aw, "by": {}}
    for m in metrics:
        for comp in COMPONENTS:
            sp, pe, arg, err = [], [], {"subject_last": [], "last": []}, []
            for e, a in zip(exact, approx):
                first = min(e.subject_positions)  # gn: cells before the subject cannot change
                x, y = a.normalized(comp, m)[:, first:], e.normalized(comp, m)[:, first:]
                sp.append(_corr(x.ravel(), y.ravel(), spearmanr))
                pe.append(_corr(x.ravel(), y.ravel(), pearsonr))
                for site in arg:
                    p = e.position(site)
                    arg[site].append(bool(np.nanargmax(a.normalized(comp, m)[:, p]) == np.nanargmax(e.normalized(comp, m)[:, p])))
                err.append(np.nanmean(np.abs(x - y), axis=1))
            sp_ok, pe_ok = [v for v in sp if v is not None], [v for v in pe if v is not None]
            out["by"][f"{comp}/{m}"] = {
                "spearman_median": median(sp_ok) if sp_ok else None,
                "spearman_p10": float(np.percentile(sp_ok, 10)) if sp_ok else None,
                "pearson_median": median(pe_ok) if pe_ok else None,
                "argmax_layer_agree": {s: float(np.mean(v)) for s, v in arg.items()},
                "mean_abs_error_by_layer": [float(v) for v in np.nanmean(np.vstack(err), axis=0)],
            }
    sat = [e.clean["prob"] > 0.9 for e in exact]
    out["saturated_clean_prob_share"] = float(np.mean(sat))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--kg")
    ap.add_argument("--facts-n", type=int, default=30)
    ap.add_argument("--real-facts", type=int, default=3, help="facts on the real-shape model (0: skip it)")
    ap.add_argument("--out")
    add_device_arg(ap)
    args = ap.parse_args()
    set_device(args.device)
    torch.set_num_threads(1)
    res = {"device": args.device, "load_start": load()}
    if args.model:
        model, tok, table, facts = toy_model(args.model, args.kg)
        res["toy"] = {d: compare(model, tok, facts[: args.facts_n], table, d) for d in ("denoise", "noise")}
    if args.real_facts:
        model, tok, n_params = real_shape_model()
        table, facts = real_facts()
        res["real_shape"] = {"n_params": n_params,
                             "denoise": compare(model, tok, facts[: args.real_facts], table, "denoise")}
    res["load_end"] = load()
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
