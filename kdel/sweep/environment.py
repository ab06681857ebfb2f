"""The code version and environment a sweep records (RESULTS.md, results.json, every stage record).

The one call site of the project's provenance record: `kdel.provenance.provenance()` when that module
exists; otherwise a local record with the same facts (package version, git commit and dirty flag, library
versions, CPU/GPU). Hardware facts never enter a cache key: they are reported, not matched.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

LIBRARIES = ("torch", "transformers", "tokenizers", "numpy", "scipy", "networkx", "faker", "matplotlib", "yaml")


def provenance() -> dict:
    try:
        from kdel.provenance import provenance as project_provenance  # the audit branch's record
    except ImportError:
        return _local_provenance()
    return project_provenance()


def _git(root: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def code_version() -> dict:
    import kdel

    root = Path(kdel.__file__).resolve().parents[1]
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no") if commit else None
    return {"package": "kdel", "version": getattr(kdel, "__version__", None) or _dist_version(),
            "git_commit": commit, "git_dirty": None if status is None else bool(status)}


def _dist_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("kdel")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return None


def library_versions() -> dict:
    import importlib

    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        out["pyyaml" if name == "yaml" else name] = getattr(mod, "__version__", getattr(mod, "VERSION", None))
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict:
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "gpus": gpus, "platform": platform.platform(),
            "torch_threads": torch.get_num_threads()}


def _local_provenance() -> dict:
    return {"code": code_version(), "libraries": library_versions(), "hardware": hardware()}
