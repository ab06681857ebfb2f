"""Atomic file writes and content hashes: nothing already written is ever half-overwritten.

The atomic-write core lives in `synth_kg.atomic` (synth_kg stands alone) and is re-exported here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

from synth_kg.atomic import (  # noqa: F401 - one implementation, shared with synth_kg (which imports nothing from kdel)
    atomic_write_bytes,
    atomic_write_text,
    dumps_json,
    replace_directory,
    sha256_text,
    staging_dir_for,
)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, dumps_json(obj))


def read_json_object(path: str | Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing, unreadable, not JSON or not an object."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return d if isinstance(d, dict) else None


def read_jsonl(path: str | Path) -> list[tuple[int, object]]:
    """(1-based line number, parsed value) of each non-blank line; a line that is not JSON is a UserError
    naming the file and line."""
    from kdel.errors import UserError

    path = Path(path)
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    return rows


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def staged_dir(final: str | Path):
    """Write a directory output all at once: yields an empty staging directory beside `final`; on success it
    replaces `final` in one rename (`replace_directory`), on any error it is removed and `final` is untouched."""
    import shutil

    staging = staging_dir_for(final)
    try:
        yield staging
        replace_directory(staging, Path(final))
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
