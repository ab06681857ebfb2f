"""Local worker processes (multiprocessing, spawn): each loads the model once and reverts every edit.

Cases are striped over the workers (worker k runs cases k, k+N, ...), so the assignment is deterministic
and every worker gets work. Each worker writes its case files itself (atomically) and reports to the
parent through a queue; a worker whose parent died stops before its next case.
"""

from __future__ import annotations

import importlib
import os
import queue
import traceback
from pathlib import Path

from kdel.audit.cases import AuditConfig, CaseSpec
from kdel.errors import UserError


def method_modules(config: AuditConfig) -> list[str]:
    """Modules defining the configured methods, imported by each worker so its registry has them."""
    from kdel.delete import get_method

    mods = []
    for m in config.methods:
        mod = type(get_method(m)).__module__
        if mod != "__main__" and mod not in mods:
            mods.append(mod)
    return mods


def setup_worker(model_dir, table, config: AuditConfig, out: Path, device: str, threads: int | None,
                 index: int, backend: str, modules: list[str]):
    """Load the model and the base scores in this process; return a ready CaseExecutor."""
    from kdel.audit.evaluate import BaseScores
    from kdel.audit.execute import CaseExecutor
    from kdel.models.loading import load_model_for_table
    from kdel.runtime import set_threads

    set_threads(threads)
    try:  # one weight-loading bar per worker would drown the parent's case progress bar
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    for mod in modules:
        importlib.import_module(mod)
    model, tok = load_model_for_table(model_dir, table, device)
    pool = table.unrelated_sample(config.unrelated_size, config.seed)
    base = BaseScores.compute(model, tok, table, pool)
    return CaseExecutor(model, tok, table, config, base, cache_dir=Path(out) / "cache", worker_index=index,
                        backend=backend)


def _worker_main(index, model_dir, table, config_json, out, device, threads, specs_json, modules, results):
    from kdel.audit.runner import write_case

    parent = os.getppid()
    try:
        config = AuditConfig.from_json(config_json)
        ex = setup_worker(model_dir, table, config, Path(out), device, threads, index, "local", modules)
        for sj in specs_json:
            if os.getppid() != parent:  # the parent was killed: stop, a rerun resumes
                return
            doc = ex.run(CaseSpec.from_json(sj))
            write_case(Path(out), doc)
            results.put(("done", index, doc["case_id"]))
        results.put(("exit", index, None))
    except UserError as e:
        results.put(("usererror", index, str(e)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        results.put(("fail", index, traceback.format_exc()))


def run_local_workers(model_dir, table, out: Path, config: AuditConfig, todo: list[CaseSpec], workers: int,
                      device: str, threads: int | None, bar) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    n = min(workers, len(todo))
    modules = method_modules(config)
    procs = []
    for k in range(n):
        shard = [s.to_json() for s in todo[k::n]]
        p = ctx.Process(target=_worker_main, name=f"kdel-audit-{k}", daemon=True,
                        args=(k, str(model_dir), table, config.to_json(), str(out), device, threads, shard, modules,
                              results))
        p.start()
        procs.append(p)
    running = set(range(n))
    try:
        while running:
            try:
                kind, idx, payload = results.get(timeout=1.0)
            except queue.Empty:
                dead = [k for k in running if not procs[k].is_alive()]
                if not dead:
                    continue
                try:  # a message sent just before it exited may still be in flight
                    kind, idx, payload = results.get(timeout=2.0)
                except queue.Empty:
                    raise RuntimeError(f"audit worker {dead[0]} died (exit code {procs[dead[0]].exitcode})") from None
            if kind == "done":
                bar.update(1)
            elif kind == "exit":
                running.discard(idx)
            elif kind == "usererror":
                raise UserError(payload)
            else:
                raise RuntimeError(f"audit worker {idx} failed:\n{payload}")
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
