"""`--backend ray`: the same cases on a Ray cluster (optional extra `kdel[ray]`).

Ray connects to the cluster named by RAY_ADDRESS (or one this process already joined), else starts a local
one on 127.0.0.1 sized for the requested actors (no dashboard) and shuts it down afterwards. Each actor
loads the model once (the model directory must be readable where the actors run) and returns case dicts;
the driver writes the case files. Actors use OUT/cache for key statistics where that path is writable.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

from kdel.audit.cases import AuditConfig, CaseSpec
from kdel.errors import UserError


class _CaseActor:
    """Loads the model on its first case (in a method, not __init__: Ray keeps the exception of a failed
    method call, so a UserError there reaches the driver as one line; a failed __init__ only gives text)."""

    def __init__(self, index, model_dir, table, config_json, out, device, threads, modules, sys_path):
        self.args = (model_dir, table, AuditConfig.from_json(config_json), Path(out), device, threads, index, "ray",
                     modules)
        self.sys_path = sys_path
        self.ex = None

    def run(self, spec_json: dict) -> dict:
        if self.ex is None:
            for p in self.sys_path:  # the driver's import path, so modules registering methods import here too
                if p not in sys.path and os.path.isdir(p):
                    sys.path.append(p)
            from kdel.audit.workers import setup_worker

            self.ex = setup_worker(*self.args)
        return self.ex.run(CaseSpec.from_json(spec_json))


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray, an optional extra: pip install 'kdel[ray]'") from None
    return ray


def _connect(ray, n_actors: int, cpus_per_actor: int, gpus_per_actor: int) -> bool:
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


def _actors_that_fit(ray, n: int, cpus_per_actor: int, gpus_per_actor: int) -> int:
    res = ray.cluster_resources()
    fit = int(res.get("CPU", 0) // cpus_per_actor)
    if gpus_per_actor:
        fit = min(fit, int(res.get("GPU", 0) // gpus_per_actor))
    if fit < 1:
        need = f"{cpus_per_actor} CPU" + (f" and {gpus_per_actor} GPU" if gpus_per_actor else "")
        raise UserError(f"the Ray cluster cannot host one audit actor ({need}); it has {res.get('CPU', 0):g} CPU "
                        f"and {res.get('GPU', 0):g} GPU")
    if fit < n:  # actors live until the end, so one that never starts would stall its share of the cases
        warnings.warn(f"the Ray cluster fits {fit} audit actors, not {n}: using {fit}", stacklevel=3)
    return min(n, fit)


def _get(ray, ref):
    """ray.get, with an actor's UserError re-raised as one line and other failures named."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, UserError):
            raise UserError(str(cause)) from None
        raise RuntimeError(f"a Ray audit actor failed: {e}") from None
    except ray.exceptions.RayActorError as e:
        raise RuntimeError(f"a Ray audit actor died: {e}") from None


def run_ray(model_dir, table, out: Path, config: AuditConfig, todo: list[CaseSpec], workers: int, device: str,
            threads: int | None, bar) -> None:
    ray = _import_ray()
    from kdel.audit.runner import write_case
    from kdel.audit.workers import method_modules

    cpus = max(1, threads or 1)
    gpus = 1 if str(device).startswith("cuda") else 0
    n = min(workers, len(todo))
    started = _connect(ray, n, cpus, gpus)
    actors = []
    try:
        n = _actors_that_fit(ray, n, cpus, gpus)
        actor_cls = ray.remote(num_cpus=cpus, num_gpus=gpus)(_CaseActor)
        table_ref = ray.put(table)
        modules = method_modules(config)
        path = [p for p in sys.path if p]
        actors = [actor_cls.remote(k, str(Path(model_dir).resolve()), table_ref, config.to_json(), str(out), device,
                                   threads, modules, path) for k in range(n)]
        pending = {}
        for i, s in enumerate(todo):  # striped like the local workers; each actor runs its calls in order
            pending[actors[i % n].run.remote(s.to_json())] = s.case_id
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                write_case(out, _get(ray, ref))
                bar.update(1)
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()
