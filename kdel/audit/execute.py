"""Run one case on a loaded model: apply the deletion, evaluate it in one batched pass, revert, verify.

A `CaseExecutor` lives in one process (the main one, a local worker or a Ray actor): it loads nothing
itself, holds the model, the base-model scores and the edit context, and turns a `CaseSpec` into a
kdel-case/1 dict. Every edit is reverted before the next case; the revert is checked (bit-exact equality
of the touched tensors, or the whole model's hash with verify_revert="full").
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

import numpy as np
import torch

from kdel import __version__
from kdel.audit.cases import AuditConfig, CaseSpec
from kdel.audit.evaluate import (
    WRECK_THRESHOLD,
    BaseScores,
    _clean,
    _mean,
    erasure_score,
    group_metrics,
    kl_divergence,
    new_target_rows,
    rewrite_score,
)
from kdel.audit.schema import CASE_FORMAT
from kdel.models.scoring import forward_scores

HASE_NEIGHBORHOOD_GROUPS = ("same_object", "same_relation")  # CounterFact-like: same relation or same object


def model_state_hash(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class CaseExecutor:
    def __init__(self, model, tok, table, config: AuditConfig, base: BaseScores, cache_dir: Path | None,
                 worker_index: int = 0, backend: str = "local"):
        from kdel.delete import EditContext

        self.model, self.tok, self.table, self.config, self.base = model, tok, table, config, base
        # GA/NPO/FT retain sets exclude the unrelated sample (kdel/delete/retain.py)
        self.ctx = EditContext(model, tok, table, cache_dir=cache_dir, unrelated_pool=list(base.unrelated_pool))
        self.worker = {"index": worker_index, "pid": os.getpid(), "host": socket.gethostname(), "backend": backend}
        self.full_verify = config.verify_revert == "full"
        self.base_hash = model_state_hash(model) if self.full_verify else None
        self._methods: dict[str, object] = {}

    def method(self, name: str, hparams: dict):
        key = name
        if key not in self._methods:
            from kdel.audit.cases import resolve_hparams
            from kdel.delete import get_method

            hp, _ = resolve_hparams(name, self.config.hparams.get(name))
            self._methods[key] = get_method(name, hp)
        return self._methods[key]

    # -- one case ----------------------------------------------------------------------------------
    def run(self, spec: CaseSpec) -> dict:
        from kdel.delete import DeletionRequest, apply_deletion
        from kdel.delete.objectives import REWRITING

        t0 = time.perf_counter()
        table, base, rows = self.table, self.base, self.base.rows
        facts = [table.fact(i) for i in spec.fact_ids]
        fact = facts[0]
        doc = self._skeleton(spec)
        rewriting = spec.objective in REWRITING and spec.new_targets
        new_enc = new_target_rows(self.tok, fact, spec.new_targets[0]) if rewriting else []
        new_before = forward_scores(self.model, new_enc, base.pad_id)[0] if new_enc else None

        request = DeletionRequest(facts=facts, objective=spec.objective, new_targets=spec.new_targets,
                                  layer=spec.layer, site=spec.site, seed=spec.seed)
        method = self.method(spec.method, spec.hparams)
        try:
            handle, record = apply_deletion(method, self.ctx, request)
        except Exception as e:  # noqa: BLE001 - a method that fails on a case is a result, not a crash
            doc["status"] = "error"
            doc["error"] = f"{type(e).__name__}: {' '.join(str(e).split())}"
            doc["timing"] = {"total_s": time.perf_counter() - t0}
            self._verify(None)
            return doc
        t_edit = time.perf_counter()

        # ONE batched pass after the edit over the union of the case's prompts.
        groups = table.probe_groups(fact.id, base.unrelated_pool)
        canon = rows.canonical
        union = list(canon)
        pos = {r: i for i, r in enumerate(union)}
        for r in rows.train[fact.id] + rows.para[fact.id]:
            if r not in pos:
                pos[r] = len(union)
                union.append(r)
        enc = [rows.encoded[r] for r in union] + new_enc
        dist_rows = [pos[canon[i]] for i in groups["unrelated"]]
        after_all, dists = forward_scores(self.model, enc, base.pad_id, dist_rows)
        t_eval = time.perf_counter()
        handle.revert()
        revert_ok = self._verify(handle)

        def pair(base_rows):
            idx = [pos[r] for r in base_rows]
            return base.scores.subset(np.array(base_rows, dtype=np.int64)), after_all.subset(np.array(idx, dtype=np.int64))

        group_docs = {}
        for name, members in groups.items():
            if name == "target":
                b, a = pair(rows.train[fact.id])
            elif name == "paraphrase":
                b, a = pair(rows.para[fact.id] if members else [])
            else:
                b, a = pair([canon[i] for i in members])
            group_docs[name] = group_metrics(b, a)

        gb, ga = pair(canon)
        deleted = set(spec.fact_ids)
        keep = np.array([i not in deleted for i in range(len(canon))])
        flips = gb.recalled & ~ga.recalled & keep
        elig = gb.recalled & keep
        global_doc = {
            "n": len(canon),
            "acc_before": _mean(gb.recalled),
            "acc_after": _mean(ga.recalled),
            "acc_drop": _mean(gb.recalled) - _mean(ga.recalled),
            "n_flipped_excluding_target": int(flips.sum()),
            "flip_rate_excluding_target": _mean(flips[elig]),
            "mean_p_drop_excluding_target": _mean((gb.prob - ga.prob)[elig]),
        }

        kls = [kl_divergence(base.dists[canon[i]], dists[pos[canon[i]]]) for i in groups["unrelated"]]
        kl_doc = {"n": len(kls), "mean": _mean(kls), "max": float(max(kls)) if kls else None}

        # efficacy on the canonical prompt (the one the edit is computed for) and on every phrasing
        tb, ta = pair(rows.train[fact.id])
        pb_, pa_ = pair(rows.para[fact.id])
        n_train = len(rows.train[fact.id])
        if new_enc:
            nb, na = new_before, after_all.subset(np.arange(len(union), len(union) + len(new_enc)))
            nb_t, na_t = nb.subset(np.arange(n_train)), na.subset(np.arange(n_train))
            nb_p, na_p = nb.subset(np.arange(n_train, len(new_enc))), na.subset(np.arange(n_train, len(new_enc)))
        success_each = self._success_each(spec.objective, tb, ta, nb_t if new_enc else None, na_t if new_enc else None)
        para_success = (self._success_each(spec.objective, pb_, pa_, nb_p if new_enc else None,
                                           na_p if new_enc else None) if len(pb_) else np.zeros(0, bool))
        success = bool(success_each[0])
        efficacy = {
            "objective": spec.objective,
            "success": success,
            "target_prompts_success_rate": _mean(success_each),
            "target_recall_after": _mean(ta.recalled),
            "target_recall_before": _mean(tb.recalled),
            "target_p_before": float(tb.prob[0]),
            "target_p_after": float(ta.prob[0]),
            "target_logprob_after": float(ta.logprob[0]),
            "target_rank_after": int(ta.first_token_rank[0]),
            "target_first_token_recalled_after": bool(ta.first_token_recalled[0]),
            "paraphrase_recall_before": _mean(pb_.recalled),
            "paraphrase_recall_after": _mean(pa_.recalled),
            "paraphrase_success_rate": _mean(para_success),
            "new_target": spec.new_targets[0] if new_enc else None,
            "new_target_recall_after": bool(na_t.recalled[0]) if new_enc else None,
            "new_target_p_before": float(nb_t.prob[0]) if new_enc else None,
            "new_target_p_after": float(na_t.prob[0]) if new_enc else None,
        }

        raising = spec.objective != "erase"
        if raising:
            pre, post = (nb_t.prob, na_t.prob) if new_enc else (tb.prob, ta.prob)
            ppre, ppost = (nb_p.prob, na_p.prob) if new_enc else (pb_.prob, pa_.prob)
            score = rewrite_score
        else:
            pre, post, ppre, ppost, score = tb.prob, ta.prob, pb_.prob, pa_.prob, erasure_score
        neigh = [i for g in HASE_NEIGHBORHOOD_GROUPS for i in groups.get(g, [])]
        nb_rows = [canon[i] for i in neigh]
        if nb_rows:
            hb, ha = pair(nb_rows)
            from kdel.audit.evaluate import neighborhood_score

            neigh_score = _mean(neighborhood_score(hb.prob, ha.prob))
        else:
            neigh_score = None
        hase = {
            "kind": "rewrite" if raising else "erasure",
            "efficacy_score": _clean(float(score(pre[:1], post[:1])[0])),
            "paraphrase_score": _clean(_mean(score(ppre, ppost))) if len(ppre) else None,
            "neighborhood_score": neigh_score,
            "neighborhood_groups": list(HASE_NEIGHBORHOOD_GROUPS),
            "tracing_effect": spec.tracing_effect,
        }

        unrel = group_docs.get("unrelated", {})
        wrecked = unrel.get("acc_after_recalled") is not None and unrel["acc_after_recalled"] < WRECK_THRESHOLD
        edit = record.to_json()
        edit_seconds = edit.pop("seconds", None)
        cache_hits = _pop_run_dependent(edit.get("info"))
        doc.update({
            "status": "ok",
            "edit": edit,
            "delta_norm": float(record.total_delta_norm),
            "success": success,
            "wrecked": bool(wrecked),
            "efficacy": efficacy,
            "groups": group_docs,
            "global": global_doc,
            "kl": kl_doc,
            "hase": hase,
            "revert_verified": revert_ok,
        })
        doc["timing"] = {
            "edit_s": edit_seconds,
            "apply_s": t_edit - t0,
            "eval_s": t_eval - t_edit,
            "total_s": time.perf_counter() - t0,
            "n_rows_after": len(enc),
        }
        if cache_hits:
            doc["timing"]["cov_cache"] = cache_hits
        return doc

    @staticmethod
    def _success_each(objective, before, after, new_before, new_after) -> np.ndarray:
        from kdel.delete.objectives import succeeded

        out = []
        for i in range(len(after)):
            out.append(succeeded(
                objective, bool(after.recalled[i]),
                bool(new_after.recalled[i]) if new_after is not None else None,
                float(before.prob[i]), float(after.prob[i]),
            ))
        return np.array(out, dtype=bool)

    def _verify(self, handle) -> bool:
        """The model is back to its base weights (raises: continuing on a modified model would be wrong)."""
        if handle is not None:
            for name, orig in handle.originals.items():
                if not torch.equal(self.model.get_parameter(name), orig):
                    raise RuntimeError(f"revert failed: {name} differs from its snapshot")
        if self.full_verify:
            if model_state_hash(self.model) != self.base_hash:
                raise RuntimeError("revert failed: the model's weights hash differs from the base model's")
        return True

    def _skeleton(self, spec: CaseSpec) -> dict:
        f = self.table.fact(spec.fact_ids[0])
        return {
            "format": CASE_FORMAT,
            "kdel_version": __version__,
            "case_id": spec.case_id,
            "spec": spec.spec_json(),
            "fact": {
                "id": f.id,
                "subject": f.subject,
                "target": f.target,
                "relation": f.relation,
                "prompt": f.prompt,
                "subject_degree": f.subject_popularity,
                "object_degree": f.object_popularity,
                "subject_bin": spec.subject_bin,
                "object_bin": spec.object_bin,
                "n_bins": self.config.n_bins,
                "stratify": self.config.stratify,
            },
            "trace": {
                "peak_layers": spec.peak_layers,
                "tracing_effect": spec.tracing_effect,
                "tracing_window": 5,
                "layer_source": spec.layer_source,
            },
            "worker": dict(self.worker),
        }


RUN_DEPENDENT_INFO_KEYS = ("cov_cache",)  # whether key statistics came from memory, disk or a fresh pass


def _pop_run_dependent(info) -> list:
    """Remove the run-dependent keys from a method's info (at any depth) and return their values in order:
    they depend on what this process or OUT/cache had already computed, not on the case."""
    found: list = []

    def walk(x):
        if isinstance(x, dict):
            for k in RUN_DEPENDENT_INFO_KEYS:
                if k in x:
                    found.append(x.pop(k))
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(info)
    return found
