"""The flat metrics of a case and who counts where: the names the summary, the inference and the report share.

`case_metrics(case)` flattens one ok kdel-case/1 dict into {name: number or None}; `select(case, outcome)`
says whether an ok case belongs to an outcome stratum (and if not, why: the dropped-case reasons).
"""

from __future__ import annotations

SIDE_GROUPS = ("same_subject", "same_object", "subject_as_object", "neighbors_1hop", "neighbors_2hop",
               "same_relation", "unrelated")
GROUP_METRICS = ("flip_rate", "any_broke", "mean_p_drop", "acc_after_recalled")
OUTCOMES = ("success", "failed", "all")
PREDICTORS = ("subject_degree", "object_degree")


def _num(v):
    if v is None:
        return None
    return float(v)


def case_metrics(c: dict) -> dict[str, float | None]:
    """The flat metrics of one ok case (name -> number or None)."""
    m: dict[str, float | None] = {}
    for g in ("target", "paraphrase") + SIDE_GROUPS:
        gd = c["groups"].get(g)
        if gd is None:
            continue
        for k in GROUP_METRICS:
            m[f"{g}.{k}"] = _num(gd.get(k))
        m[f"{g}.size"] = _num(gd.get("n_recalled_before"))
    for k in ("acc_drop", "flip_rate_excluding_target", "mean_p_drop_excluding_target"):
        m[f"global.{k}"] = _num(c["global"].get(k))
    m["kl.mean"] = _num(c["kl"].get("mean"))
    for k in ("success", "target_recall_after", "target_prompts_success_rate", "paraphrase_recall_after",
              "paraphrase_success_rate", "target_rank_after"):
        m[f"efficacy.{k}"] = _num(c["efficacy"].get(k))
    for k in ("efficacy_score", "paraphrase_score", "neighborhood_score", "tracing_effect"):
        m[f"hase.{k}"] = _num(c["hase"].get(k))
    m["delta_norm"] = _num(c["delta_norm"])
    m["wrecked"] = _num(c["wrecked"])
    return m


def side_effect_metrics() -> list[tuple[str, str | None]]:
    """(side-effect metric, metric giving its group size or None) for the correlations."""
    out: list[tuple[str, str | None]] = []
    for g in SIDE_GROUPS:
        for k in ("flip_rate", "any_broke", "mean_p_drop"):
            out.append((f"{g}.{k}", f"{g}.size"))
    out += [("global.acc_drop", None), ("global.flip_rate_excluding_target", None),
            ("global.mean_p_drop_excluding_target", None), ("kl.mean", "unrelated.size")]
    return out


def size_metric(metric: str) -> str | None:
    """The group-size metric that goes with a side-effect metric (None for global ones)."""
    return dict(side_effect_metrics()).get(metric)


def outcome_ok(c: dict, outcome: str) -> bool:
    """Stratum membership for the summary's cells (wrecked cases included, as always)."""
    return outcome == "all" or (c["success"] if outcome == "success" else not c["success"])


def select(c: dict, outcome: str) -> str | None:
    """None when the ok case belongs to the inference stratum `outcome`, else the reason it is left out.

    Wrecked edits (unrelated accuracy < 0.9) are neither successful nor failed deletions (DESIGN §12):
    they count only under "all"."""
    if outcome == "all":
        return None
    if c["wrecked"]:
        return "wrecked"
    if outcome == "success":
        return None if c["success"] else "failed_edit"
    return "successful_edit" if c["success"] else None


def missing_reason(c: dict, metric: str) -> str:
    """Why `metric` is None for an ok case: its probe group is empty, or the value is missing."""
    size = size_metric(metric)
    if size is not None:
        g = c["groups"].get(size.split(".")[0]) or {}
        if not g.get("n_recalled_before"):
            return "empty_group"
    return "missing_value"


def fact_key(c: dict):
    """The deleted fact (the unit of analysis)."""
    f = c["fact"]
    return f.get("id", c["case_id"])


def subject_key(c: dict) -> str:
    """The cluster: the deleted fact's subject (a hub contributes many facts)."""
    f = c["fact"]
    s = f.get("subject")
    return str(s).strip() if s is not None else f"fact:{fact_key(c)}"
