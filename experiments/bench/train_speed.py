"""Benchmark (not a test): seconds for the `tiny` preset to reach 0.99 recall on the default KG.

Target (DESIGN §10): <= 120 s on one CPU thread. Also times a fixed number of steps with 1 and 2
threads, and reports held-out paraphrase recall beside training-template recall.

    python experiments/bench/train_speed.py [--out runs/bench-train] [--ratio-steps 150] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


def time_fixed_steps(kg, out: Path, threads: int, steps: int, seed: int) -> float:
    from kdel.train import TrainConfig, train_model

    # target 1.0 with eval only at the end: the timed part is (almost) pure training steps
    cfg = TrainConfig(preset="tiny", seed=seed, threads=threads, max_steps=steps, target_recall=1.0,
                      eval_every=10**9)
    t = time.perf_counter()
    train_model(kg, out, cfg, progress=False)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="keep the trained model here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--ratio-steps", type=int, default=150, help="steps timed for the 1 vs 2 threads ratio (0: skip)")
    args = ap.parse_args()

    import torch
    from synth_kg import KGConfig, generate

    from kdel.train import TrainConfig, train_model

    kg = generate(KGConfig())
    tmp = Path(tempfile.mkdtemp(prefix="kdel-bench-train-"))
    out = args.out or tmp / "model"
    t = time.perf_counter()
    report = train_model(kg, out, TrainConfig(preset=args.preset, seed=args.seed, threads=1), progress=True)
    wall = time.perf_counter() - t
    r = report.recall
    result = {
        "kg": {"entities": len(kg.entities), "relations": len(kg.relations), "facts": len(kg.triples),
               "corpus_lines": len(kg.corpus_lines())},
        "preset": args.preset, "n_params": report.n_params, "seed": args.seed,
        "reached_target": report.reached_target, "steps": report.steps, "epochs": report.epochs,
        "train_seconds_1_thread": report.seconds, "wall_seconds_incl_setup_and_save": round(wall, 2),
        "recall": r["recall"], "first_token_recall": r["first_token_recall"],
        "paraphrase_recall": r["paraphrase_recall"], "paraphrase_first_token_recall": r["paraphrase_first_token_recall"],
        "by_popularity_bin": r["by_popularity_bin"],
        "torch": torch.__version__, "python": platform.python_version(), "cpu_count": __import__("os").cpu_count(),
    }
    if args.ratio_steps:
        t1 = time_fixed_steps(kg, tmp / "t1", 1, args.ratio_steps, args.seed)
        t2 = time_fixed_steps(kg, tmp / "t2", 2, args.ratio_steps, args.seed)
        result.update({"ratio_steps": args.ratio_steps, "seconds_1_thread": round(t1, 2),
                       "seconds_2_threads": round(t2, 2), "two_over_one_thread_time": round(t2 / t1, 3)})
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
