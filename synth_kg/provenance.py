"""Where a KG bundle came from: synth_kg's code version and the environment, written as kg_provenance.json.

`provenance()` returns a JSON-able dict:
  synth_kg_version    `VERSION` (= synth_kg.__version__, kept equal to kdel's: one distribution ships both)
  git_commit, git_dirty
                      the commit of the git checkout synth_kg is imported from and whether tracked files differ
                      from it (None, None when synth_kg is not imported from a git checkout, e.g. an installed wheel)
  code_hash           sha256 over synth_kg's own .py sources (identifies the code with or without git)
  python, networkx, faker
                      the versions generation depends on (None where a library is not installed)
  platform            the OS

It never fails: whatever cannot be found is None. The record lives beside kg.json, never inside it: kg.json
(and so the KG's content hash) depends only on the config, the seed and the library versions, while the
commit changes with every commit and the dirty flag with every edit. synth_kg imports nothing from kdel;
`kdel.provenance` finds the commit the same way for the kdel package.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

VERSION = "0.1.0"  # synth_kg.__version__; a test keeps it equal to kdel.__version__
PROVENANCE_FORMAT = "kdel-kg-provenance/1"
PROVENANCE_FILE = "kg_provenance.json"
LIBRARIES = {"networkx": "networkx", "faker": "Faker"}  # key in the record -> distribution name
_PACKAGE = Path(__file__).resolve().parent  # synth_kg/


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except Exception:  # noqa: BLE001 - not installed, or broken metadata: unknown, never an error
        return None


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                           env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except Exception:  # noqa: BLE001 - no git, a timeout, ...: unknown
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def checkout_state(package: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout whose top folder holds the package folder `package` (synth_kg/ or
    kdel/), or (None, None) when there is none. Shared with kdel.provenance (synth_kg is the ground floor).

    Dirty means a tracked file differs from the commit (untracked files such as run outputs do not count)."""
    top = _git(["rev-parse", "--show-toplevel"], package)
    if not top or not (Path(top) / package.name).resolve() == package:
        return None, None  # not a checkout, or the package comes from elsewhere (e.g. site-packages inside a repo)
    commit = _git(["rev-parse", "HEAD"], package)
    if commit is None:
        return None, None
    status = _git(["status", "--porcelain", "--untracked-files=no"], package)
    return commit, (None if status is None else bool(status))


def sources_hash(package: Path) -> str | None:
    """sha256 over the relative paths and bytes of the package folder's .py files (sorted)."""
    try:
        h = hashlib.sha256()
        for p in sorted(package.rglob("*.py")):
            h.update(p.relative_to(package).as_posix().encode())
            h.update(b"\0")
            h.update(p.read_bytes())
        return h.hexdigest()
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout holding this synth_kg package (see checkout_state)."""
    return checkout_state(_PACKAGE)


@functools.lru_cache(maxsize=1)
def code_hash() -> str | None:
    """sha256 over synth_kg's .py files."""
    return sources_hash(_PACKAGE)


def provenance() -> dict:
    """The code version and environment of this process (see the module docstring)."""
    commit, dirty = git_state()
    rec = {
        "synth_kg_version": VERSION,
        "git_commit": commit,
        "git_dirty": dirty,
        "code_hash": code_hash(),
        "python": platform.python_version(),
    }
    rec.update({key: _version(dist) for key, dist in LIBRARIES.items()})
    try:
        rec["platform"] = platform.platform()
    except Exception:  # noqa: BLE001 - unknown, never an error
        rec["platform"] = None
    return rec


def bundle_provenance(kg_hash: str, seed: int) -> dict:
    """The kg_provenance.json object of a bundle: the format, the KG it describes (its content hash and seed)
    and `provenance()`."""
    return {"format": PROVENANCE_FORMAT, "kg_hash": kg_hash, "seed": seed, **provenance()}
