"""What forgetting an entity did: per-fact efficacy and the side effects on the entity's probe groups.

Cost: the unedited model's scores of every prompt come from the audit's `BaseScores` (one pass, shared by
every entity of a run); after the edit, ONE batched pass scores the union of the rows needed: every fact's
canonical prompt (probe groups, global accuracy) and every training and held-out prompt of the deleted facts,
with the unrelated prompts' next-token distributions from the same logits (KL).
"""

from __future__ import annotations

from kdel.audit import measure
from kdel.audit.evaluate import WRECK_THRESHOLD, BaseScores, _mean, group_metrics
from kdel.forget.entity import fact_role
from kdel.models.scoring import forward_scores


def union_rows(base: BaseScores, deleted: list[int]) -> tuple[list[int], dict[int, int]]:
    """Every fact's canonical row, then every training and held-out row of the deleted facts."""
    union = list(base.rows.canonical)
    pos = {r: i for i, r in enumerate(union)}
    for fid in deleted:
        for r in base.rows.train[fid] + base.rows.para[fid]:
            if r not in pos:
                pos[r] = len(union)
                union.append(r)
    return union, pos


def score_after(model, base: BaseScores, deleted: list[int], unrelated: list[int]) -> measure.CaseScores:
    """The one batched pass on the edited model (see the module docstring)."""
    union, pos = union_rows(base, deleted)
    dist_rows = [pos[base.rows.canonical[i]] for i in unrelated]
    after, dists = forward_scores(model, [base.rows.encoded[r] for r in union], base.pad_id, dist_rows)
    return measure.CaseScores(base, after, dists, pos, len(union), None)


def group_sections(cs: measure.CaseScores, groups: dict[str, list[int]]) -> dict[str, dict]:
    rows = cs.base.rows
    out = {}
    for name, members in groups.items():
        if name == "entity":
            base_rows = [r for i in members for r in rows.train[i]]
        elif name == "paraphrase":
            base_rows = [r for i in members for r in rows.para[i]]
        else:
            base_rows = [rows.canonical[i] for i in members]
        out[name] = group_metrics(*cs.pair(base_rows))
    return out


def fact_rows(cs: measure.CaseScores, table, deleted: list[int], name: str) -> list[dict]:
    """Per deleted fact: recall of its object on each training and held-out prompt, before and after."""
    rows = cs.base.rows
    out = []
    for fid in deleted:
        f = table.fact(fid)
        tb, ta = cs.pair(rows.train[fid])
        pb, pa = cs.pair(rows.para[fid])
        out.append({
            "fact_id": fid, "role": fact_role(f, name), "subject": f.subject, "relation": f.relation,
            "target": f.target, "prompt": f.prompt,
            "recalled_before": bool(tb.recalled[0]), "recalled_after": bool(ta.recalled[0]),
            "p_before": float(tb.prob[0]), "p_after": float(ta.prob[0]),
            "training_recall_before": [bool(x) for x in tb.recalled],
            "training_recall_after": [bool(x) for x in ta.recalled],
            "heldout_recall_before": [bool(x) for x in pb.recalled],
            "heldout_recall_after": [bool(x) for x in pa.recalled],
            # removed: no training prompt recalls the whole object any more
            "removed": not bool(ta.recalled.any()),
            "removed_heldout": not bool(pa.recalled.any()),
        })
    return out


def efficacy_summary(facts: list[dict]) -> dict:
    """Over the deleted facts: how many were removed on every training prompt, and recall left."""
    train_after = [x for f in facts for x in f["training_recall_after"]]
    held_before = [x for f in facts for x in f["heldout_recall_before"]]
    held_after = [x for f in facts for x in f["heldout_recall_after"]]
    known = [f for f in facts if any(f["training_recall_before"])]
    return {
        "n_facts": len(facts),
        "n_known_before": len(known),  # recalled on at least one training prompt before
        "n_removed": sum(f["removed"] for f in facts),
        "removed_rate": _mean([f["removed"] for f in facts]),
        "all_removed": all(f["removed"] for f in facts),
        "canonical_recall_after": _mean([f["recalled_after"] for f in facts]),
        "training_recall_after": _mean(train_after),
        "heldout_recall_before": _mean(held_before),
        "heldout_recall_after": _mean(held_after),
    }


def global_section(cs: measure.CaseScores, deleted: list[int]) -> dict:
    """Global accuracy over every fact, and the retained accuracy: facts recalled before and not deleted."""
    g = measure.global_section(cs, set(deleted)).to_json()
    flip = g.get("flip_rate_excluding_target")
    g["retained_acc"] = None if flip is None else 1.0 - flip
    return g


def side_effects(cs: measure.CaseScores, groups: dict[str, list[int]], deleted: list[int]) -> dict:
    sections = group_sections(cs, groups)
    unrel = sections.get("unrelated", {}).get("acc_after_recalled")
    return {
        "groups": sections,
        "global": global_section(cs, deleted),
        "kl": measure.kl_section(cs, groups.get("unrelated", [])).to_json(),
        "wrecked": bool(unrel is not None and unrel < WRECK_THRESHOLD),
    }

