"""How KG generation scales: wall time and peak memory vs the number of entities (--relations auto).

Each size runs in a fresh subprocess so its peak RSS is its own:
    python experiments/bench/kg_scale.py --sizes 5000 10000 20000 50000 --topology ba
Prints a markdown table; memory per entity staying flat means memory grows linearly.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
from synth_kg import KGConfig, generate
n, topology, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
kg = generate(KGConfig(topology=topology, entities=n, relations="auto", seed=0))
t1 = time.perf_counter()
kg.save(out)
t2 = time.perf_counter()
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"entities": n, "triples": len(kg.triples), "generate_s": t1 - t0, "save_s": t2 - t1,
                  "peak_rss_mb": rss_mb}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000, 50000])
    ap.add_argument("--topology", default="ba")
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, "-c", CHILD, str(n), args.topology, f"{tmp}/kg"],
                                 check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    # Linear fit of peak RSS on entities: slope = MB per 1,000 entities, intercept = fixed cost (imports).
    xs = [r["entities"] for r in rows]
    ys = [r["peak_rss_mb"] for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    intercept = my - slope * mx
    print("| entities | triples | generate (s) | save (s) | peak RSS (MB) | linear fit (MB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        fit = intercept + slope * r["entities"]
        print(f"| {r['entities']:,} | {r['triples']:,} | {r['generate_s']:.1f} | {r['save_s']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {fit:.0f} |")
    print(f"\npeak RSS ≈ {intercept:.0f} MB + {slope * 1000:.1f} MB per 1,000 entities")


if __name__ == "__main__":
    main()
