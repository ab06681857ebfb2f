"""Read the finished cells' cases back, and write them as one flat table (DIR/cases.csv).

cases.csv has one row per case × probe group (an error case: one row with an empty group and the error),
with the cell (condition, seed, its settings), the case (method, site, layer, fact, degrees, success,
‖ΔW‖, Hase et al.'s scores) and the group's metrics. Written with the csv module; `pandas.read_csv` loads it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from kdel.io import atomic_write_text, read_json_object
from kdel.sweep.grid import FOLDERS, Cell, Plan

GROUP_COLUMNS = ("n", "n_recalled_before", "acc_before", "acc_after", "acc_after_recalled", "flip_rate", "n_flipped",
                 "any_broke", "n_gained", "mean_logp_before", "mean_logp_after", "mean_p_before", "mean_p_after",
                 "mean_p_drop", "hase_neighborhood")
CELL_COLUMNS = ("condition", "seed", "topology", "format", "model", "entities", "objective")
CASE_COLUMNS = ("case_id", "status", "method", "site", "layer", "fact_id", "subject", "relation", "target",
                "subject_degree", "object_degree", "subject_bin", "object_bin", "success", "wrecked", "delta_norm",
                "efficacy_score", "paraphrase_score", "neighborhood_score", "tracing_effect", "global_acc_drop",
                "kl_mean", "error")
COLUMNS = CELL_COLUMNS + CASE_COLUMNS + ("group",) + GROUP_COLUMNS


def audit_dir(out: Path, cell: Cell) -> Path:
    return Path(out) / FOLDERS["audit"] / cell.audit


def read_cell_cases(out: Path, cell: Cell) -> list[dict] | None:
    """The cell's planned cases, or None when its audit is not finished (a missing or invalid case file)."""
    from kdel.audit.schema import CaseSchemaError
    from kdel.audit.store import case_path, read_case
    from kdel.sweep.stages import stage_record

    d = audit_dir(out, cell)
    cfg = read_json_object(d / "audit_config.json")
    if cfg is None or stage_record(d) is None:
        return None
    cases = []
    for cid in cfg.get("case_ids", []):
        try:
            c = read_case(case_path(d, cid))
        except CaseSchemaError:
            return None
        if c is None:
            return None
        cases.append(c)
    return sorted(cases, key=lambda c: c["case_id"])


def collect(out: Path, plan: Plan) -> dict[tuple[str, int], list[dict]]:
    """(condition, seed) -> cases, for every finished cell."""
    got = {}
    for cell in plan.cells:
        cases = read_cell_cases(out, cell)
        if cases is not None:
            got[(cell.condition, cell.seed)] = cases
    return got


def _v(x):
    if x is None:
        return ""
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, float):
        return repr(x)
    return x


def case_rows(case: dict, cell_values: dict) -> list[dict]:
    spec, fact = case["spec"], case["fact"]
    base = dict(cell_values)
    base.update({
        "case_id": case["case_id"], "status": case["status"], "method": spec["method"], "site": spec["site"],
        "layer": spec["layer"], "fact_id": fact["id"], "subject": fact["subject"], "relation": fact["relation"],
        "target": fact["target"], "subject_degree": fact["subject_degree"], "object_degree": fact["object_degree"],
        "subject_bin": fact["subject_bin"], "object_bin": fact["object_bin"], "error": case.get("error"),
    })
    if case["status"] != "ok":
        return [base | {"group": ""}]
    hase = case.get("hase") or {}
    base.update({"success": case["success"], "wrecked": case["wrecked"], "delta_norm": case["delta_norm"],
                 "efficacy_score": hase.get("efficacy_score"), "paraphrase_score": hase.get("paraphrase_score"),
                 "neighborhood_score": hase.get("neighborhood_score"), "tracing_effect": hase.get("tracing_effect"),
                 "global_acc_drop": case["global"].get("acc_drop"), "kl_mean": case["kl"].get("mean")})
    rows = []
    for group in sorted(case["groups"]):
        g = case["groups"][group]
        rows.append(base | {"group": group} | {k: g.get(k) for k in GROUP_COLUMNS})
    return rows


def cases_csv_text(config, cases_by_cell: dict[tuple[str, int], list[dict]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for (cond, seed), cases in sorted(cases_by_cell.items()):
        c = config.condition(cond)
        cell_values = {"condition": cond, "seed": seed, "topology": c.topology, "format": c.format, "model": c.model,
                       "entities": c.entities, "objective": c.objective}
        for case in cases:
            for row in case_rows(case, cell_values):
                w.writerow({k: _v(row.get(k)) for k in COLUMNS})
    return buf.getvalue()


def write_cases_csv(path: Path, config, cases_by_cell) -> int:
    text = cases_csv_text(config, cases_by_cell)
    atomic_write_text(path, text)
    return text.count("\n") - 1
