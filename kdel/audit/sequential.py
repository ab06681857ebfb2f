"""Sequential deletion curves: N deletions one after another without revert, measured along the way.

A **trial** = one method, site, layer and order, and a seed: the order picks N facts the unedited model recalls
(canonical prompt); each is erased on the model the earlier steps left. After every step (or every `every`
steps, and after the last) ONE batched pass scores every fact's canonical prompt and the training prompts of
the facts deleted so far, giving:
  global_acc        retained accuracy: facts recalled before and not deleted (yet) that are still recalled
  global_acc_all    accuracy over every fact (deleted ones included)
  groups.<g>        the retained accuracy of each probe group of the deleted set: a fact's group is the first
                    (DESIGN §12 precedence) among its groups relative to every deleted fact so far
  deleted_recall    share of the deleted facts whose object is recalled again (canonical prompt)
  stay_deleted      share of the facts erased at their own step that are still erased (earlier deletions)
  removed_all_templates  share of the deleted facts recalled on no training prompt
  cum_delta_norm    ||ΣΔW|| = ||W_now − W_0|| over every matrix any step touched
After the trial, the whole handle reverts every step and the model's weight hash must equal the base hash.

Orders: degree-high / degree-low (subject degree, ties broken by the seed), random, same-subject (all facts of
one subject, then the next subject, subjects in random order), hop (subjects in breadth-first order from a
random entity over the undirected KG: each next subject is a neighbour of an earlier one where possible).

Key statistics: C (ROME, r-ROME, MEMIT, AlphaEdit, with AlphaEdit's null space) is computed once per trial on
the unedited model and pinned for every step, as the reference implementations do when they edit sequentially
(their statistics are computed once per layer and cached). For ROME this changes nothing (the key at l does not
depend on the W_out(l) it edits); for MEMIT's window l..l+w-1 it means the upper layers' C describe the
original model's keys, not the keys after the earlier steps.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np

from kdel.errors import UserError

ORDERS = ("degree-high", "degree-low", "random", "same-subject", "hop")
TRIAL_FORMAT = "kdel-sequential-trial/1"
SITE_METHODS = ("rome", "r-rome", "memit", "alphaedit")  # methods that use the edit site (when they do not say)
GROUPS = ("same_subject", "same_object", "subject_as_object", "neighbors_1hop", "neighbors_2hop", "same_relation",
          "unrelated")


@dataclass
class SequentialConfig:
    n_steps: int
    orders: tuple[str, ...] = ("random",)
    trials: int = 3
    every: int = 1
    methods: tuple[str, ...] = ("rome",)
    objective: str = "erase"
    sites: tuple[str, ...] = ("last",)
    layers: tuple = (None,)  # None: the method's default layer (the middle one)
    unrelated_size: int = 100
    seed: int = 0
    hparams: dict = field(default_factory=dict)

    @classmethod
    def from_audit(cls, audit, n_steps: int, orders, trials: int, every: int):
        """From the shared `kdel audit` flags (an AuditConfig): --layers auto = the method's default layer."""
        if audit.layers == "all":
            raise UserError("--layers all is for the single-fact audit; give --layers auto or a list of layers")
        layers = (None,) if audit.layers == "auto" else tuple(audit.layers)
        return cls(n_steps=n_steps, orders=tuple(orders), trials=trials, every=every, methods=tuple(audit.methods),
                   objective=audit.objective, sites=tuple(audit.sites), layers=layers,
                   unrelated_size=audit.unrelated_size, seed=audit.seed, hparams=dict(audit.hparams))

    def validate(self) -> None:
        if self.n_steps < 1:
            raise UserError(f"--sequential must be >= 1, got {self.n_steps}")
        if not self.orders or len(set(self.orders)) != len(self.orders):
            raise UserError("--order must name one or more distinct orders")
        for o in self.orders:
            if o not in ORDERS:
                raise UserError(f"unknown order {o!r}: choose from {', '.join(ORDERS)}")
        if self.trials < 1:
            raise UserError(f"--trials must be >= 1, got {self.trials}")
        if self.every < 1:
            raise UserError(f"--every must be >= 1, got {self.every}")
        if self.objective != "erase":
            raise UserError("sequential deletion curves measure erasure: use --objective erase")

    def to_json(self) -> dict:
        return {"n_steps": self.n_steps, "orders": list(self.orders), "trials": self.trials, "every": self.every,
                "methods": list(self.methods), "objective": self.objective, "sites": list(self.sites),
                "layers": list(self.layers), "unrelated_size": self.unrelated_size, "seed": self.seed,
                "hparams": self.hparams}


def uses_site(method_name: str) -> bool:
    from kdel.delete import get_method

    return bool(getattr(type(get_method(method_name)), "uses_site", method_name in SITE_METHODS))


def plan_trials(config: SequentialConfig) -> list[dict]:
    """Trial specs in a deterministic order: method × site × layer × order × trial (seed = seed + trial)."""
    from kdel.audit.cases import resolve_hparams
    from kdel.audit.resume import unit_id

    specs, seen = [], set()
    for method in config.methods:
        hp = resolve_hparams(method, config.hparams.get(method))[1]
        sites = config.sites if uses_site(method) else config.sites[:1]
        for site in sites:
            for layer in config.layers:
                for order in config.orders:
                    for t in range(config.trials):
                        spec = {"method": method, "objective": config.objective, "site": site, "layer": layer,
                                "order": order, "trial": t, "seed": config.seed + t, "n_steps": config.n_steps,
                                "every": config.every, "hparams": hp}
                        spec["id"] = unit_id(spec)
                        if spec["id"] not in seen:
                            seen.add(spec["id"])
                            specs.append(spec)
    return specs


# -- orders -----------------------------------------------------------------------------------------------
def fact_order(table, eligible, order: str, n: int, seed: int) -> list[int]:
    """The first `n` facts of `eligible` (ids recalled before) in `order` (module docstring)."""
    eligible = sorted(int(i) for i in eligible)
    if n > len(eligible):
        raise UserError(f"--sequential {n} asks for more deletions than the {len(eligible)} facts the model "
                        f"recalls before any edit")
    rng = random.Random(f"{seed}:{order}")
    tie = {i: rng.random() for i in eligible}
    deg = {i: table.fact(i).subject_popularity for i in eligible}
    if order == "degree-high":
        out = sorted(eligible, key=lambda i: (-deg[i], tie[i]))
    elif order == "degree-low":
        out = sorted(eligible, key=lambda i: (deg[i], tie[i]))
    elif order == "random":
        out = sorted(eligible, key=lambda i: tie[i])
    else:
        by_subject: dict[str, list[int]] = {}
        for i in sorted(eligible, key=lambda i: tie[i]):
            by_subject.setdefault(table.fact(i).subject, []).append(i)
        subjects = sorted(by_subject, key=lambda s: tie[by_subject[s][0]])
        if order == "hop":
            subjects = _bfs_subjects(table.probe_index.adjacency, subjects, rng)
        out = [i for s in subjects for i in by_subject[s]]
    return out[:n]


def _bfs_subjects(adjacency, subjects: list[str], rng: random.Random) -> list[str]:
    """Subjects in breadth-first order over the undirected graph, restarting at a random unvisited subject."""
    wanted = set(subjects)
    visited: set[str] = set()
    out: list[str] = []
    remaining = list(subjects)
    while remaining:
        start = remaining[rng.randrange(len(remaining))]
        queue = [start]
        visited.add(start)
        while queue:
            node = queue.pop(0)
            if node in wanted:
                out.append(node)
            nbrs = sorted(adjacency.get(node, ()))
            rng.shuffle(nbrs)
            for v in nbrs:
                if v not in visited:
                    visited.add(v)
                    queue.append(v)
        remaining = [s for s in subjects if s not in visited]
    return out


# -- one trial --------------------------------------------------------------------------------------------
def pin_key_statistics(method, ctx, spec: dict) -> dict | None:
    """The unedited model's key statistics at every layer the trial's method edits (None for methods that use
    none), computed before the first step so that every step uses them. The layers depend on the trial's
    layer and site, not on the fact, so any fact serves to ask the method for them."""
    if not hasattr(method, "stats"):
        return None
    from kdel.delete import DeletionRequest

    probe = DeletionRequest([ctx.table.fact(0)], spec["objective"], None, spec["layer"], spec["site"], spec["seed"])
    return {layer: method.stats(ctx, layer) for layer in method.layers_of(ctx, probe)}


class TrialRunner:
    """Runs trials on one loaded model with the run's base scores; the model is back to its base weights
    (checked by hash) after every trial."""

    def __init__(self, model, tok, table, base):
        from kdel.audit.execute import model_state_hash

        self.model, self.tok, self.table, self.base = model, tok, table, base
        self.base_hash = model_state_hash(model)
        self.recalled = base.canonical_recalled()
        self.rank = {g: k for k, g in enumerate(GROUPS)}

    def run(self, spec: dict) -> dict:
        from kdel.audit.cases import method_from_spec
        from kdel.audit.execute import model_state_hash
        from kdel.delete import DeletionRequest, EditContext, apply_deletion
        from kdel.delete.sequential import SequentialHandle
        from kdel.forget.apply import CumulativeDelta

        t0, c0 = time.perf_counter(), time.process_time()
        table, base = self.table, self.base
        method = method_from_spec(spec["method"], spec["hparams"])
        ctx = EditContext(self.model, self.tok, table, cache_dir=None, unrelated_pool=list(base.unrelated_pool))
        ctx.pinned_key_stats = pin_key_statistics(method, ctx, spec)
        order = fact_order(table, np.flatnonzero(self.recalled), spec["order"], spec["n_steps"], spec["seed"])
        n_facts = len(table)
        group_of = np.full(n_facts, len(GROUPS), dtype=np.int64)  # len(GROUPS): in no group
        deleted = np.zeros(n_facts, dtype=bool)
        erased_at_step: dict[int, bool] = {}
        handles, cum = [], CumulativeDelta(self.model)
        steps, checkpoints = [], [self._checkpoint0()]
        status, error, edit_s, eval_s = "ok", None, 0.0, 0.0
        try:
            for i, fid in enumerate(order):
                fact = table.fact(fid)
                te = time.perf_counter()
                request = DeletionRequest([fact], spec["objective"], None, spec["layer"], spec["site"], spec["seed"])
                try:
                    handle, rec = apply_deletion(method, ctx, request, score=False)
                except Exception as e:  # noqa: BLE001 - a step that fails ends the trial; it is a result
                    status, error = "error", f"step {i + 1} (fact {fid}): {type(e).__name__}: {' '.join(str(e).split())}"
                    break
                edit_s += time.perf_counter() - te
                handles.append(handle)
                cum.add(handle)
                deleted[fid] = True
                for g, members in table.probe_groups(fid, base.unrelated_pool).items():
                    if g in self.rank:
                        idx = np.asarray(members, dtype=np.int64)
                        if idx.size:
                            group_of[idx] = np.minimum(group_of[idx], self.rank[g])
                tv = time.perf_counter()
                last = i + 1 == len(order)
                if (i + 1) % spec["every"] == 0 or last:
                    point, now = self._checkpoint(i + 1, order[:i + 1], deleted, group_of, erased_at_step, fid, cum)
                    checkpoints.append(point)
                else:
                    now = self._erased_now(fid)
                erased_at_step[fid] = now
                eval_s += time.perf_counter() - tv
                steps.append({"step": i + 1, "fact_id": int(fid), "subject": fact.subject,
                              "subject_degree": fact.subject_popularity, "delta_norm": rec.total_delta_norm,
                              "erased": now, "edit_s": rec.seconds})
        finally:
            SequentialHandle(handles).revert()
        reverted = model_state_hash(self.model) == self.base_hash
        if not reverted:
            raise RuntimeError("sequential trial: the model's weights differ from the base model after the revert")
        return {"status": status, "error": error, "order": [int(i) for i in order], "steps": steps,
                "checkpoints": checkpoints, "revert_verified": reverted,
                "timing": {"total_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "edit_s": edit_s,
                           "eval_s": eval_s}}

    def _checkpoint0(self) -> dict:
        keep = self.recalled
        return {"step": 0, "global_acc": 1.0 if keep.any() else None, "global_acc_all": float(self.recalled.mean()),
                "groups": {}, "deleted_recall": None, "stay_deleted": None, "removed_all_templates": None,
                "cum_delta_norm": 0.0, "mean_p_drop": 0.0}

    def _erased_now(self, fid: int) -> bool:
        """Mini pass: is the just-deleted fact's object no longer recalled on its canonical prompt?"""
        from kdel.models.scoring import forward_scores

        row = self.base.rows.canonical[fid]
        scores, _ = forward_scores(self.model, [self.base.rows.encoded[row]], self.base.pad_id)
        return not bool(scores.recalled[0])

    def _checkpoint(self, step, done, deleted, group_of, erased_at_step, current, cum) -> tuple[dict, bool]:
        """ONE batched pass: every canonical prompt + the deleted facts' training prompts."""
        from kdel.models.scoring import forward_scores

        rows = self.base.rows
        union = list(rows.canonical)
        extra = {}
        for fid in done:
            extra[fid] = list(range(len(union), len(union) + len(rows.train[fid])))
            union += rows.train[fid]
        after, _ = forward_scores(self.model, [rows.encoded[r] for r in union], self.base.pad_id)
        n = len(rows.canonical)
        now = after.recalled[:n]
        before_p = self.base.scores.prob[rows.canonical]
        keep = self.recalled & ~deleted
        groups = {}
        for g, k in self.rank.items():
            m = keep & (group_of == k)
            groups[g] = {"n": int(m.sum()), "acc": float(now[m].mean()) if m.any() else None}
        ids = np.asarray(done, dtype=np.int64)
        erased_now = ~now[ids]
        earlier = [erased_at_step.get(int(f)) for f in done]
        stay = [bool(e) for e, was in zip(erased_now, earlier) if was]
        point = {
            "step": step,
            "global_acc": float(now[keep].mean()) if keep.any() else None,
            "global_acc_all": float(now.mean()),
            "groups": groups,
            "deleted_recall": float(now[ids].mean()),
            "stay_deleted": float(np.mean(stay)) if stay else None,
            "removed_all_templates": float(np.mean([not after.recalled[extra[f]].any() for f in done])),
            "cum_delta_norm": cum.total(),
            "mean_p_drop": float((before_p - after.prob[:n])[keep].mean()) if keep.any() else None,
        }
        return point, not bool(now[current])
