"""Atomic file writes and content hashes: nothing already written is ever half-overwritten."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)
from typing import Any


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


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, dumps_json(obj))


def read_json_object(path: str | Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing, unreadable, not JSON or not an object."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return d if isinstance(d, dict) else None


def read_jsonl(path: str | Path, blank_lines: bool = True) -> list[tuple[int, object]]:
    """(1-based line number, parsed value) of each non-blank line; a line that is not JSON is a UserError
    naming the file and line. With `blank_lines=False` a blank line is a UserError too (where line numbers
    are ids, a skipped line would shift every id after it)."""
    from kdel.errors import UserError

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}): expected JSON lines") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not a JSON-lines file") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            if blank_lines:
                continue
            raise UserError(f"{path}:{lineno}: blank line; every line must hold one JSON object (ids are line "
                            f"numbers): remove it")
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


@contextlib.contextmanager
def staged_dir(final: str | Path):
    """Write a directory output all at once: yields an empty staging directory beside `final`; on success it
    replaces `final` in one rename (`replace_directory`), on any error it is removed and `final` is untouched."""
    staging = staging_dir_for(final)
    try:
        yield staging
        replace_directory(staging, Path(final))
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
