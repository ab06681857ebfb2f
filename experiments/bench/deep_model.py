"""Train the benchmark's deep toy model: a 12-layer, d = 128 GPT-2 on a KG, for layer-choice benchmarks.

Not a test. The `tiny` preset has 4 layers, where two-stage confirms 3 of 4 layers and means nothing; on this
deeper model the agreement of two-stage with exact-only choice (localize.py forces both) is measured on facts
a model really learned. One thread; ~3 minutes on the default KG.

    python experiments/bench/deep_model.py --kg runs/kg --out runs/deep_model [--seed 0]
"""

from __future__ import annotations

import argparse

import torch

from kdel.train import presets
from kdel.train.loop import TrainConfig, train_model

DEEP = presets.Preset("deep12", n_layer=12, n_embd=128, n_head=4, lr=2e-3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kg", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    presets.PRESETS.setdefault(DEEP.name, DEEP)  # a benchmark-only size, not a user preset
    report = train_model(args.kg, args.out, TrainConfig(preset=DEEP.name, seed=args.seed), progress=False)
    print(f"recall {report.recall['recall']:.3f}, {report.seconds:.0f} s, {report.steps} steps")


if __name__ == "__main__":
    main()
