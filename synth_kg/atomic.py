"""Atomic writes, canonical JSON and content hashes: nothing already written is ever half-overwritten.

synth_kg's own helpers (it imports nothing from kdel); `kdel.io` re-exports them, so both packages write
files the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same directory and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600 files: give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any) -> str:
    """Canonical JSON text (sorted keys, 2-space indent, trailing newline): same object, same bytes."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=True) + "\n"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def replace_directory(staging: Path, final: Path) -> None:
    """Move a fully written `staging` directory to `final`, replacing an old one only at the end.

    The old directory (if any) is renamed aside first and removed only once the new one is in place,
    so a crash leaves either the old or the new directory, never a mix.
    """
    final = Path(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def staging_dir_for(final: str | Path) -> Path:
    """A fresh empty directory beside `final` to write into before `replace_directory`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.parent))
    os.chmod(path, 0o777 & ~_UMASK)  # mkdtemp creates 0700 directories
    return path
