"""`--backend ray`: the same cases on a Ray cluster (optional extra `kdel[ray]`).

Ray connects to the cluster named by RAY_ADDRESS (or one this process already joined), else starts a local
one on 127.0.0.1 sized for the requested actors (no dashboard) and shuts it down afterwards. Each actor loads
the model once (the model directory must be readable where the actors run) and gets the driver's base scores
as numpy arrays through the object store.

Dispatch is dynamic: every actor starts with one case and a free actor takes the next one. An actor that dies
(killed, out of memory, node lost) is replaced by a new actor and its case is retried there, up to
MAX_ATTEMPTS tries per case; the driver writes each case file once, so nothing is lost or duplicated.
`gpus_per_worker` may be a fraction (e.g. 0.25: four actors share a GPU).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from collections import deque

from kdel.audit.cases import AuditConfig, CaseSpec
from kdel.errors import UserError

MAX_ATTEMPTS = 3  # one try and two retries on a new actor


class _CaseActor:
    """Loads the model on its first case (in a method, not __init__: Ray keeps the exception of a failed
    method call, so a UserError there reaches the driver as one line; a failed __init__ only gives text)."""

    def __init__(self, index, model_dir, table, config_json, cache_dir, device, threads, modules, sys_path,
                 base_arrays):
        self.args = (model_dir, table, AuditConfig.from_json(config_json), cache_dir, device, threads, index, "ray",
                     modules, base_arrays)
        self.sys_path = sys_path
        self.ex = None

    def pid(self) -> int:
        return os.getpid()

    def run(self, spec_json: dict, attempt: int) -> dict:
        if self.ex is None:
            for p in self.sys_path:  # the driver's import path, so modules registering methods import here too
                if p not in sys.path and os.path.isdir(p):
                    sys.path.append(p)
            from kdel.audit.workers import setup_executor

            self.ex = setup_executor(*self.args)
            self.args = None
        return self.ex.run(CaseSpec.from_json(spec_json), attempt).to_json()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray, an optional extra: pip install 'kdel[ray]'") from None
    return ray


def _connect(ray, n_actors: int, cpus_per_actor: int, gpus_per_actor: float) -> bool:
    """Join a running cluster or start a local one; True when this call initialised Ray (so it shuts it down)."""
    if ray.is_initialized():
        return False
    common = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**common)
    else:  # a private cluster on this machine with room for every actor, reachable only from localhost
        ray.init(num_cpus=n_actors * cpus_per_actor, num_gpus=None if gpus_per_actor else 0,
                 _node_ip_address="127.0.0.1", **common)
    return True


def actors_that_fit(resources: dict, n: int, cpus_per_actor: int, gpus_per_actor: float) -> int:
    """How many of `n` actors a cluster with `resources` (ray.cluster_resources()) can host at once."""
    fit = int(resources.get("CPU", 0) // cpus_per_actor)
    if gpus_per_actor:
        fit = min(fit, int(math.floor(resources.get("GPU", 0) / gpus_per_actor + 1e-9)))
    if fit < 1:
        need = f"{cpus_per_actor} CPU" + (f" and {gpus_per_actor:g} GPU" if gpus_per_actor else "")
        raise UserError(f"the Ray cluster cannot host one audit actor ({need}); it has "
                        f"{resources.get('CPU', 0):g} CPU and {resources.get('GPU', 0):g} GPU")
    if fit < n:  # actors live until the end, so one that never starts would stall its cases
        warnings.warn(f"the Ray cluster fits {fit} audit actors, not {n}: using {fit}", stacklevel=3)
    return min(n, fit)


def _result(ray, ref):
    """ray.get; an actor's UserError is re-raised as one line, other task failures are named. A dead actor
    (RayActorError) propagates to the dispatcher, which replaces it."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, UserError):
            raise UserError(str(cause)) from None
        raise RuntimeError(f"a Ray audit actor failed: {e}") from None


def _reason(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 160 else text[:157] + "..."


def run_ray(model_dir, table, cache_dir, config: AuditConfig, todo: list[CaseSpec], workers: int, device: str,
            threads: int | None, gpus_per_worker: float | None, base_arrays: dict, sink) -> None:
    """Run `todo` on Ray actors; `sink(case_json)` gets each finished case (in this process)."""
    ray = _import_ray()
    from pathlib import Path

    from kdel.audit.workers import method_modules

    cpus = max(1, threads or 1)
    gpus = (1 if str(device).startswith("cuda") else 0) if gpus_per_worker is None else gpus_per_worker
    n = min(workers, len(todo))
    started = _connect(ray, n, cpus, gpus)
    actors: dict[int, object] = {}  # slot -> actor handle
    index: dict[int, int] = {}  # slot -> actor index (replacements get new ones)
    try:
        n = actors_that_fit(ray.cluster_resources(), n, cpus, gpus)
        actor_cls = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=0, max_task_retries=0)(_CaseActor)
        shared = (ray.put(table), config.to_json(), str(cache_dir), device, threads, method_modules(config),
                  [p for p in sys.path if p], ray.put(base_arrays))
        model_path = str(Path(model_dir).resolve())

        def new_actor(slot: int, k: int) -> None:
            table_ref, config_json, cache, dev, thr, mods, path, base_ref = shared
            actors[slot] = actor_cls.remote(k, model_path, table_ref, config_json, cache, dev, thr, mods, path,
                                            base_ref)
            index[slot] = k

        for slot in range(n):
            new_actor(slot, slot)
        next_index = n
        queue = deque((s, 1) for s in todo)
        free = deque(range(n))
        pending: dict = {}  # ref -> (slot, spec, attempt)
        while queue or pending:
            while free and queue:
                slot = free.popleft()
                spec, attempt = queue.popleft()
                pending[actors[slot].run.remote(spec.to_json(), attempt)] = (slot, spec, attempt)
            ready, _ = ray.wait(list(pending), num_returns=1)
            slot, spec, attempt = pending.pop(ready[0])
            try:
                doc = _result(ray, ready[0])
            except ray.exceptions.RayActorError as e:
                if attempt >= MAX_ATTEMPTS:
                    raise RuntimeError(f"case {spec.case_id}: its Ray audit actor died {attempt} times; "
                                       f"last: {_reason(e)}") from None
                warnings.warn(f"Ray audit actor {index[slot]} died ({_reason(e)}); its case {spec.case_id} is "
                              f"retried on a new actor (attempt {attempt + 1} of {MAX_ATTEMPTS})", stacklevel=2)
                ray.kill(actors[slot])
                new_actor(slot, next_index)
                next_index += 1
                queue.appendleft((spec, attempt + 1))
                free.append(slot)
                continue
            free.append(slot)
            sink(doc)
    finally:
        for a in actors.values():
            ray.kill(a)
        if started:
            ray.shutdown()
