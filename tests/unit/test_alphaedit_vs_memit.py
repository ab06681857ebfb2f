"""experiments/curse_of_popularity/alphaedit_vs_memit.py: paired differences on planted case rows."""

from __future__ import annotations

import csv

import numpy as np

from tests.experiment_modules import load

FIELDS = ["condition", "seed", "topology", "case_id", "status", "method", "fact_id", "subject", "success",
          "global_acc_drop", "kl_mean", "group", "mean_p_drop"]


def _write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)


def test_paired_differences_recover_a_planted_shift(tmp_path, capsys):
    mod = load("experiments/curse_of_popularity/alphaedit_vs_memit.py", "alphaedit_vs_memit")
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(3):
        for fid in range(12):
            base = rng.uniform(0, 0.02)
            for method, shift, ok in (("memit", 0.0, fid % 2), ("alphaedit", 0.01, 1)):
                for group in ("unrelated", "same_subject", "target"):
                    rows.append({"condition": "memit-ba", "seed": seed, "topology": "ba", "case_id": f"{method}{fid}",
                                 "status": "ok", "method": method, "fact_id": fid, "subject": f"s{fid // 3}",
                                 "success": ok, "global_acc_drop": base + shift, "kl_mean": base,
                                 "group": group, "mean_p_drop": base + shift})
    # a target only one method edited, and another method's rows: both ignored
    rows.append({**rows[0], "fact_id": 99, "method": "memit"})
    rows.append({**rows[0], "fact_id": 5, "method": "rome", "global_acc_drop": 9.0})
    _write(tmp_path / "cases.csv", rows)
    pairs = mod.read_pairs(tmp_path / "cases.csv")
    assert len(pairs) == 36 and sum(p["memit"]["success"] for p in pairs) == 18
    res = {r["metric"]: r for r in mod.compare(pairs, n_boot=500, seed=0)}
    u = res["unrelated"]
    assert abs(u["estimate"] - 0.01) < 1e-9
    assert u["lo"] <= 0.01 <= u["hi"] and u["cells_positive"] == 3 and u["alphaedit_larger"] == 36
    assert abs(res["kl_mean"]["estimate"]) < 1e-12 and res["kl_mean"]["holm_p"] == 1.0  # no difference planted
    assert u["holm_p"] < 0.05 and u["n_clusters"] == 12  # 4 subjects x 3 cells
    assert res["same_object"]["estimate"] is None  # no rows of that group
    # every replicate is above 0: p is only known to be below the bootstrap's resolution, and printed so
    assert u["p_below_resolution"] and not res["kl_mean"]["p_below_resolution"]
    line = next(ln for ln in mod.markdown("t", list(res.values())).splitlines() if ln.startswith("| unrelated |"))
    assert "| < 0.002 | ≤ 0.008 |" in line, line
    assert mod.main(["--sweep", str(tmp_path), "--n-boot", "200"]) == 0
    assert "Targets both methods edited successfully" in capsys.readouterr().out
    assert mod.main(["--sweep", str(tmp_path / "none")]) == 2
