"""Where stage jobs run: in this process (`--workers 1`), N local processes, or Ray tasks (`--backend ray`).

Every executor has `submit(job) -> handle`, `wait(handles) -> [(handle, record | None, error | None)]` for at
least one finished job, and `close()`. A job runs with one torch thread by default.

Local workers are spawned processes that die with the sweep: on Linux each asks the kernel for SIGKILL when
its parent dies (prctl PR_SET_PDEATHSIG), elsewhere a watchdog thread notices the parent is gone; so a sweep
killed with kill -9 leaves no orphan writing into its directory while the rerun takes over.
Ray tasks need the sweep directory on a file system every Ray node can read and write.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from kdel.errors import UserError
from kdel.sweep.grid import Job

BACKENDS = ("local", "ray")


def _job_args(job: Job) -> tuple:
    return job.kind, job.key, job.inputs, job.deps


def _run(args: tuple, out: str, device: str, threads: int) -> dict:
    from kdel.sweep.stages import run_job

    kind, key, inputs, deps = args
    return run_job(Job(kind, key, inputs, deps), out, device=device, threads=threads)


def _error_text(e: BaseException) -> tuple[str, bool]:
    """(one-line message, whether it is a user error)."""
    return " ".join(f"{type(e).__name__}: {e}".split()) if not isinstance(e, UserError) else " ".join(str(e).split()), \
        isinstance(e, UserError)


class InProcess:
    """Runs each job at submit time, in this process."""

    slots = 1

    def __init__(self, out: Path, device: str, threads: int):
        self.args = (str(out), device, threads)
        self._done: dict[int, tuple] = {}
        self._n = 0

    def submit(self, job: Job) -> int:
        self._n += 1
        try:
            self._done[self._n] = (_run(_job_args(job), *self.args), None)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - a failed job is reported, the others go on
            if os.environ.get("KDEL_DEBUG"):
                raise
            self._done[self._n] = (None, _error_text(e))
        return self._n

    def wait(self, handles: list) -> list[tuple]:
        return [(h, *self._done.pop(h)) for h in handles]

    def close(self) -> None:
        pass


def _die_with_parent() -> None:
    """Worker initializer: exit when the sweep process dies, whatever killed it."""
    parent = os.getppid()
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
            raise OSError("prctl failed")
    except (OSError, AttributeError):
        def watch():
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _init_worker(sys_path: list[str]) -> None:
    _die_with_parent()
    for p in sys_path:
        if p not in sys.path:
            sys.path.append(p)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


class LocalPool:
    """N spawned worker processes (concurrent.futures)."""

    def __init__(self, out: Path, device: str, threads: int, workers: int):
        self.slots = workers
        self.args = (str(out), device, threads)
        self.pool = self._new_pool()

    def _new_pool(self):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=self.slots, mp_context=mp.get_context("spawn"),
                                   initializer=_init_worker, initargs=([p for p in sys.path if p],))

    def submit(self, job: Job):
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self.pool.submit(_run, _job_args(job), *self.args)
        except BrokenProcessPool:  # a worker died (e.g. killed for memory): its jobs failed, start afresh
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            return self.pool.submit(_run, _job_args(job), *self.args)

    def wait(self, handles: list) -> list[tuple]:
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        out = []
        for f in done:
            try:
                out.append((f, f.result(), None))
            except Exception as e:  # noqa: BLE001 - includes a worker that died (BrokenProcessPool)
                out.append((f, None, _error_text(e)))
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _ray_task(args: tuple, out: str, device: str, threads: int, sys_path: list[str]) -> dict:
    for p in sys_path:
        if p not in sys.path and os.path.isdir(p):
            sys.path.append(p)
    return _run(args, out, device, threads)


class RayPool:
    """Jobs as Ray tasks (one CPU each, one GPU each on cuda)."""

    def __init__(self, out: Path, device: str, threads: int, workers: int):
        from kdel.audit.ray_backend import _connect, _import_ray

        self.ray = _import_ray()
        gpus = 1 if str(device).startswith("cuda") else 0
        self.started = _connect(self.ray, workers, max(1, threads), gpus)
        self.slots = workers
        self.args = (str(Path(out).resolve()), device, threads, [p for p in sys.path if p])
        self.task = self.ray.remote(num_cpus=max(1, threads), num_gpus=gpus, max_retries=0)(_ray_task)

    def submit(self, job: Job):
        return self.task.remote(_job_args(job), *self.args)

    def wait(self, handles: list) -> list[tuple]:
        ray = self.ray
        ready, _ = ray.wait(handles, num_returns=1)
        out = []
        for ref in ready:
            try:
                out.append((ref, ray.get(ref), None))
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                out.append((ref, None, _error_text(cause) if cause is not None else (f"Ray task failed: {e}", False)))
            except ray.exceptions.RayError as e:
                out.append((ref, None, (f"Ray task failed: {type(e).__name__}: {e}", False)))
        return out

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def make_executor(backend: str, workers: int, out: Path, device: str, threads: int = 1):
    if backend not in BACKENDS:
        raise UserError(f"--backend must be local or ray, got {backend!r}")
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if backend == "ray":
        return RayPool(out, device, threads, workers)
    if workers == 1:
        return InProcess(out, device, threads)
    return LocalPool(out, device, threads, workers)
