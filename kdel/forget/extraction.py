"""The extraction check: can a forgotten fact's object still be got out of the model by any phrasing?

For every deleted fact and every one of its templates (training and held-out):
  * the **greedy completion** of the prompt (as many tokens as the object has, plus `extra_tokens`), and
    whether it produces the object (the completion starts with the object's tokens) or contains it (the
    object's words appear anywhere in the decoded completion);
  * the object's **rank**: the rank of its first token over the vocabulary (0 = top-1) and, with
    `candidates` > 0, the rank of p(object) among plausible answers: the object and up to `candidates`
    other objects of the same relation (all entity names when the facts have no relation), drawn with the
    seed. Rank 0 means an attacker who ranks the candidates by the model's probability picks the object.
A fact is **extractable** when some template's completion produces or contains its object; the report says
by which kind of template (training, heldout). Greedy decoding makes the check deterministic.
"""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import torch

from kdel.models.generation import extend, greedy
from kdel.models.scoring import _pad_id, encode_prompt, encode_prompt_target, forward_scores


@torch.no_grad()
def greedy_completions(model, tok, prompts: list[str], steps: list[int]) -> list[list[int]]:
    """The greedy continuation (token ids) of each prompt, `steps[i]` tokens long; prompts of one token
    length run as one batch (no padding needed)."""
    encoded = [encode_prompt(tok, p) for p in prompts]
    by_len: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, ids in enumerate(encoded):
        by_len[(len(ids), steps[i])].append(i)
    out: list[list[int]] = [[] for _ in prompts]
    for (_, n), rows in sorted(by_len.items()):
        ids = torch.tensor([encoded[i] for i in rows], dtype=torch.long)
        new = extend(model, ids, n, greedy)
        for j, i in enumerate(rows):
            out[i] = [int(t) for t in new[j]]
    return out


def _words(text: str) -> list[str]:
    return text.split()


def contains_words(haystack: str, needle: str) -> bool:
    """Whether `needle`'s words occur consecutively among `haystack`'s words."""
    h, n = _words(haystack), _words(needle)
    return bool(n) and any(h[i:i + len(n)] == n for i in range(len(h) - len(n) + 1))


def candidate_objects(table, fact, k: int, seed: int) -> list[str]:
    """Up to `k` other objects of the fact's relation (or any entity names), sampled with the seed, sorted."""
    if k <= 0:
        return []
    if fact.relation is not None:
        pool = sorted({f.target for f in table.facts if f.relation == fact.relation} - {fact.target})
    else:
        pool = [n for n in table.entity_names if n not in (fact.target, fact.subject)]
    rng = random.Random(f"{seed}:{fact.id}")
    return sorted(rng.sample(pool, min(k, len(pool))))


def extraction_check(model, tok, table, fact_ids: list[int], extra_tokens: int = 2, candidates: int = 20,
                     seed: int = 0) -> dict:
    """Run the check on the model as it is (module docstring); a JSON-able report."""
    pad = _pad_id(tok)
    items = []  # (fact, prompt, kind, target ids)
    for fid in fact_ids:
        f = table.fact(fid)
        for kind, prompts in (("training", f.prompts), ("heldout", f.paraphrases)):
            for p in prompts:
                items.append((f, p, kind, encode_prompt_target(tok, p, f.target)))
    completions = greedy_completions(model, tok, [p for _, p, _, _ in items],
                                     [len(enc[1]) + extra_tokens for *_, enc in items])
    scores, _ = forward_scores(model, [enc for *_, enc in items], pad)
    cand_rows, cand_of = [], []  # rows scoring every candidate object on every template
    for i, (f, p, _, _) in enumerate(items):
        for c in candidate_objects(table, f, candidates, seed):
            cand_rows.append(encode_prompt_target(tok, p, c))
            cand_of.append(i)
    cand_lp = forward_scores(model, cand_rows, pad)[0].logprob if cand_rows else np.zeros(0)
    beaten = np.zeros(len(items), dtype=np.int64)
    n_cand = np.zeros(len(items), dtype=np.int64)
    for j, i in enumerate(cand_of):
        n_cand[i] += 1
        beaten[i] += int(cand_lp[j] > scores.logprob[i])

    per_fact: dict[int, dict] = {}
    for i, (f, p, kind, (_, target_ids)) in enumerate(items):
        comp = completions[i]
        text = tok.decode(comp, skip_special_tokens=True)
        produces = comp[:len(target_ids)] == list(target_ids)
        contains = produces or contains_words(text, f.target)
        entry = per_fact.setdefault(f.id, {"fact_id": f.id, "subject": f.subject, "relation": f.relation,
                                           "target": f.target, "templates": []})
        entry["templates"].append({
            "prompt": p, "kind": kind, "completion": " ".join(text.split()),
            "produces_object": bool(produces), "contains_object": bool(contains),
            "recalled": bool(scores.recalled[i]), "p": float(np.exp(scores.logprob[i])),
            "first_token_rank": int(scores.first_token_rank[i]),
            "candidate_rank": int(beaten[i]) if n_cand[i] else None, "n_candidates": int(n_cand[i]),
        })
    facts = []
    for fid in fact_ids:
        e = per_fact[fid]
        hits = [t for t in e["templates"] if t["contains_object"]]
        ranks = [t["candidate_rank"] for t in e["templates"] if t["candidate_rank"] is not None]
        e["extractable"] = bool(hits)
        e["extractable_by"] = sorted({t["kind"] for t in hits})
        e["best_first_token_rank"] = min(t["first_token_rank"] for t in e["templates"])
        e["best_candidate_rank"] = min(ranks) if ranks else None
        facts.append(e)
    return {
        "extra_tokens": extra_tokens, "candidates": candidates, "seed": seed,
        "n_facts": len(facts), "templates_checked": len(items),
        "n_extractable": sum(e["extractable"] for e in facts),
        "n_extractable_training": sum("training" in e["extractable_by"] for e in facts),
        "n_extractable_heldout": sum("heldout" in e["extractable_by"] for e in facts),
        "n_top_candidate": sum(e["best_candidate_rank"] == 0 for e in facts),
        "extractable_fact_ids": [e["fact_id"] for e in facts if e["extractable"]],
        "objects_extractable": sorted({e["target"] for e in facts if e["extractable"]}),
        "facts": facts,
    }
