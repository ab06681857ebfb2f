"""Where a result came from: the code version and the environment, recorded beside every result.

`provenance(device)` returns a JSON-able dict:
  kdel_version        the package version
  git_commit, git_dirty
                      the commit of the git checkout kdel runs from and whether tracked files differ from it
                      (None, None when kdel is not run from a git checkout, e.g. an installed wheel)
  code_hash           sha256 over kdel's own .py sources (identifies the code with or without git)
  python, torch, transformers, numpy, scipy, sklearn, networkx, faker
                      library versions (None where a library is not installed; networkx and Faker are what
                      synth_kg generates KGs with)
  platform, cpu, gpu  the OS, the CPU model, the GPU name of `device` (None on CPU)
  torch_threads, device
It never fails: whatever cannot be found is None. Bit-identical results need the same library versions,
the same CPU/GPU kind and the same thread count; `provenance` records exactly those.

Written into every audit case, summary, sweep record, train_report.json (`kdel train`), edit.json
(`kdel delete`) and forget.json (`kdel forget`). synth_kg, which imports nothing from kdel, records its own
(`synth_kg.provenance`, in a bundle's kg_provenance.json).
"""

from __future__ import annotations

import functools
import platform
from importlib import metadata
from pathlib import Path

from synth_kg.provenance import checkout_state, sources_hash

LIBRARIES = {  # key in the record -> distribution name
    "torch": "torch",
    "transformers": "transformers",
    "numpy": "numpy",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "networkx": "networkx",
    "faker": "Faker",
}
_PACKAGE = Path(__file__).resolve().parent  # kdel/


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except Exception:  # noqa: BLE001 - not installed, or broken metadata: unknown, never an error
        return None


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout holding this kdel package, or (None, None) when it is not in one
    (synth_kg.provenance.checkout_state: untracked files do not make it dirty)."""
    return checkout_state(_PACKAGE)


@functools.lru_cache(maxsize=1)
def code_hash() -> str | None:
    """sha256 over the relative paths and bytes of kdel's .py files (sorted)."""
    return sources_hash(_PACKAGE)


@functools.lru_cache(maxsize=1)
def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "processor\t: ")) and ":" in line:
                    name = line.split(":", 1)[1].strip()
                    if name and not name.isdigit():
                        return name
    except OSError:
        pass
    return platform.processor() or None


def gpu_name(device: str | None) -> str | None:
    if not device or not str(device).startswith("cuda"):
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        index = int(str(device).split(":", 1)[1]) if ":" in str(device) else torch.cuda.current_device()
        return str(torch.cuda.get_device_name(index))
    except Exception:  # noqa: BLE001 - unknown, never an error
        return None


def _torch_threads() -> int | None:
    try:
        import torch

        return int(torch.get_num_threads())
    except Exception:  # noqa: BLE001
        return None


def provenance(device: str | None = "cpu") -> dict:
    """The code version and environment of this process (see the module docstring)."""
    from kdel import __version__

    commit, dirty = git_state()
    rec = {
        "kdel_version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "code_hash": code_hash(),
        "python": platform.python_version(),
    }
    rec.update({key: _version(dist) for key, dist in LIBRARIES.items()})
    rec.update({
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "gpu": gpu_name(device),
        "torch_threads": _torch_threads(),
        "device": None if device is None else str(device),
    })
    return rec
