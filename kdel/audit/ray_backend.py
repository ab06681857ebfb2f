"""`--backend ray`: the same cases on a Ray cluster (optional extra `kdel[ray]`).

Ray connects to the cluster named by RAY_ADDRESS, else starts a local one. Each actor loads the model
once (the model directory must be readable where the actors run) and returns case dicts; the driver
writes the case files, so workers need no access to the output directory.
"""

from __future__ import annotations

from pathlib import Path

from kdel.audit.cases import AuditConfig, CaseSpec
from kdel.errors import UserError


class _CaseActor:
    def __init__(self, index, model_dir, table, config_json, out, device, threads, modules):
        from kdel.audit.workers import setup_worker

        self.ex = setup_worker(model_dir, table, AuditConfig.from_json(config_json), Path(out), device, threads,
                               index, "ray", modules)

    def run(self, spec_json: dict) -> dict:
        return self.ex.run(CaseSpec.from_json(spec_json))


def run_ray(model_dir, table, out: Path, config: AuditConfig, todo: list[CaseSpec], workers: int, device: str,
            threads: int | None, bar) -> None:
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray, an optional extra: pip install 'kdel[ray]'") from None
    from kdel.audit.runner import write_case
    from kdel.audit.workers import method_modules

    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    n = min(workers, len(todo))
    actor_cls = ray.remote(num_cpus=threads or 1, num_gpus=1 if str(device).startswith("cuda") else 0)(_CaseActor)
    table_ref = ray.put(table)
    modules = method_modules(config)
    actors = [actor_cls.remote(k, str(model_dir), table_ref, config.to_json(), str(out), device, threads, modules)
              for k in range(n)]
    pending = {}
    for i, s in enumerate(todo):  # striped like the local workers; each actor runs its calls in order
        pending[actors[i % n].run.remote(s.to_json())] = s.case_id
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                write_case(out, ray.get(ref))
                bar.update(1)
    finally:
        for a in actors:
            ray.kill(a)
