"""Local worker processes (multiprocessing, spawn): each loads the model once and reverts every edit.

The parent hands each worker its first case, then the next case to whichever worker finishes first (a slow
worker never holds a share of cases while others idle). Workers get the parent's base scores as plain numpy
arrays (no recomputation, no pickle files) and send finished case records back; the parent writes every case
file (one writer). A worker whose parent died stops.
"""

from __future__ import annotations

import importlib
import os
import queue
import traceback
from collections import deque
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


def setup_executor(model_dir, table, config: AuditConfig, cache_dir, device: str, threads: int | None, index: int,
                   backend: str, modules: list[str], base_arrays: dict):
    """Load the model in this process and return a ready CaseExecutor on the parent's base scores."""
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
    base = BaseScores.from_arrays(tok, table, base_arrays)
    return CaseExecutor(model, tok, table, config, base, cache_dir=Path(cache_dir), worker_index=index,
                        backend=backend, device=device)


def _worker_main(index, model_dir, table, config_json, cache_dir, device, threads, modules, base_arrays, inbox,
                 results):
    parent = os.getppid()
    try:
        config = AuditConfig.from_json(config_json)
        ex = setup_executor(model_dir, table, config, cache_dir, device, threads, index, "local", modules,
                            base_arrays)
        del base_arrays
        while True:
            try:
                item = inbox.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent:  # the parent was killed: stop, a rerun resumes
                    return
                continue
            if item is None:
                break
            results.put(("done", index, ex.run(CaseSpec.from_json(item)).to_json()))
        results.put(("exit", index, None))
    except UserError as e:
        results.put(("usererror", index, str(e)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        results.put(("fail", index, traceback.format_exc()))


def run_local_workers(model_dir, table, cache_dir, config: AuditConfig, todo: list[CaseSpec], workers: int,
                      device: str, threads: int | None, base_arrays: dict, sink) -> None:
    """Run `todo` on `workers` processes; `sink(case_json)` gets each finished case (in the parent)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    n = min(workers, len(todo))
    modules = method_modules(config)
    pending = deque(s.to_json() for s in todo)
    procs, inboxes = [], []
    for k in range(n):
        inbox = ctx.Queue()
        inbox.put(pending.popleft())  # every worker starts with one case
        p = ctx.Process(target=_worker_main, name=f"kdel-audit-{k}", daemon=True,
                        args=(k, str(model_dir), table, config.to_json(), str(cache_dir), device, threads, modules,
                              base_arrays, inbox, results))
        p.start()
        procs.append(p)
        inboxes.append(inbox)
    running = set(range(n))

    def feed(k: int) -> None:
        inboxes[k].put(pending.popleft() if pending else None)

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
                feed(idx)  # first the next case, then the file: the worker never waits for the write
                sink(payload)
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
