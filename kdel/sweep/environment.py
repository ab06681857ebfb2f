"""The code version and environment a sweep records (RESULTS.md, results.json, every stage record).

The project's record, `kdel.provenance.provenance(device)` (kdel version, git commit and dirty flag, a hash
of kdel's sources, library versions, platform, CPU, GPU, torch threads, device), plus the versions of the
libraries the sweep's stages also depend on (synth_kg's networkx and Faker, tokenizers, matplotlib, PyYAML)
and the CPU count. Hardware facts never enter a cache key: they are reported, not matched.
"""

from __future__ import annotations

import os

EXTRA_LIBRARIES = {"tokenizers": "tokenizers", "networkx": "networkx", "faker": "Faker", "matplotlib": "matplotlib",
                   "pyyaml": "PyYAML"}
CORE_LIBRARIES = ("python", "torch", "transformers", "numpy", "scipy", "sklearn")


def provenance(device: str | None = "cpu") -> dict:
    from importlib import metadata

    from kdel.provenance import provenance as project_provenance

    rec = dict(project_provenance(device))
    for key, dist in EXTRA_LIBRARIES.items():
        try:
            rec[key] = metadata.version(dist)
        except Exception:  # noqa: BLE001 - not installed: unknown
            rec[key] = None
    rec["cpu_count"] = os.cpu_count()
    return rec


def libraries(rec: dict) -> dict:
    """{library: version} of a provenance record (the ones that are known)."""
    keys = CORE_LIBRARIES + tuple(EXTRA_LIBRARIES)
    return {k: rec[k] for k in keys if rec.get(k)}
