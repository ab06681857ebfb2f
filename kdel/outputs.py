"""One output rule for every command that writes (DESIGN §13: outputs never destroy data).

A directory output (`--out DIR`) may be
  * missing,
  * an empty directory (a lone lock file counts as empty), or
  * a directory that the same kind of kdel command wrote before, recognised by its own format file;
anything else is refused. An output equal to, inside, or containing an input (model, KG, facts file, corpus,
traces, hparams file, audit directory) is always refused, `--force` or not.

A file output (`export-facts FILE`, `report --out FILE`) is refused when the file exists, unless `force` is
given or the file is one kdel wrote for the same purpose (`recognise`), and never when it is an input.

`DirLock` makes one process the only writer of a directory: an exclusive `fcntl.flock` on `OUT/.kdel.lock`,
held for the whole run. The kernel drops a flock when its holder dies, so a lock left by a killed process is
taken over by the next run without any cleanup.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kdel.errors import UserError

LOCK_FILE = ".kdel.lock"


def _format_of(path: Path) -> str | None:
    """The "format" string of a JSON object file (first line of a JSON-lines file), or None."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.readline() if path.suffix == ".jsonl" else f.read()
        d = json.loads(text)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return d.get("format") if isinstance(d, dict) and isinstance(d.get("format"), str) else None


def _has_format(name: str, prefix: str) -> Callable[[Path], bool]:
    return lambda d: (_format_of(d / name) or "").startswith(prefix)


def _audit_dir(d: Path) -> bool:
    """An audit directory: its config, or (config deleted) case files of kdel's case format."""
    if _has_format("audit_config.json", "kdel-audit-config/")(d):
        return True
    if _has_format("sequential/config.json", "kdel-sequential-config/")(d) or \
            _has_format("entities/config.json", "kdel-entity-audit-config/")(d):
        return True  # an audit directory holding only sequential curves or an entity audit (kdel.audit.*_run)
    cases = d / "cases"
    return cases.is_dir() and any(_has_format(p.name, "kdel-case/")(cases) for p in cases.glob("*.json"))


def _trace_dir(d: Path) -> bool:
    return _has_format("traces.jsonl", "kdel-trace/")(d) or _has_format("summary.json", "kdel-trace-summary/")(d)


def _plots_dir(d: Path) -> bool:
    """A plot folder: nothing in it but PNG files (what `kdel report` writes)."""
    return all(p.is_file() and p.suffix.lower() == ".png" for p in d.iterdir() if p.name != LOCK_FILE)


# kind -> (what to call it, recogniser of a directory that kind of command wrote)
KINDS: dict[str, tuple[str, Callable[[Path], bool]]] = {
    "kg": ("KG bundle", _has_format("kg.json", "kdel-kg/")),
    "model": ("trained model", lambda d: _has_format("kdel_model.json", "kdel-model/")(d)
              and (d / "train_report.json").is_file() and not (d / "edit.json").exists()),
    "edit": ("edited model", _has_format("edit.json", "kdel-edit/")),
    "trace": ("trace", _trace_dir),
    "audit": ("audit", _audit_dir),
    "pipeline": ("pipeline run", _has_format("pipeline.json", "kdel-run/")),
    "sweep": ("sweep", _has_format("sweep.json", "kdel-sweep/")),
    "forget": ("forget run", _has_format("forget.json", "kdel-forget/")),
    "plots": ("plot", _plots_dir),
}

REPORT_GENERATOR = "kdel"  # <meta name="generator" content="kdel"> marks a report kdel wrote


def is_kdel_report(path) -> bool:
    """Whether `path` is an HTML report that kdel wrote (its generator marker, or the heading kdel's reports
    had before the marker existed)."""
    import re

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    if re.search(r"<meta\s+name=[\"']?generator[\"']?\s+content=[\"']?kdel\b", head, re.IGNORECASE):
        return True
    return (head.startswith("<!DOCTYPE html><html lang=en><head><meta charset='utf-8'>")
            and "<p class=note>Generated " in head and " from the case files of " in head)


def _resolve(p) -> Path:
    return Path(os.path.abspath(os.path.realpath(os.path.expanduser(str(p)))))


def _overlaps(a: Path, b: Path) -> str | None:
    """How output `a` relates to input `b` ('is', 'is inside', 'contains'), or None if apart."""
    if a == b:
        return "is"
    if b in a.parents:
        return "is inside"
    if a in b.parents:
        return "contains"
    return None


def check_not_input(out, inputs: Iterable, what: str = "--out") -> None:
    """Refuse an output that is, is inside, or contains any input (always; --force does not apply)."""
    o = _resolve(out)
    for inp in inputs:
        if inp is None or str(inp) == "" or str(inp).startswith("self:"):
            continue
        i = _resolve(inp)
        how = _overlaps(o, i)
        if how is not None:
            rel = "the input" if how == "is" else f"{'inside' if how == 'is inside' else 'a directory holding'} the input"
            raise UserError(f"refusing to write {what} {out}: it is {rel} {inp}; choose another {what}")


def _entries(d: Path) -> list[str]:
    return [n for n in os.listdir(d) if n != LOCK_FILE]


def is_kind(d, kind: str) -> bool:
    """Whether directory `d` was written by a kdel command of `kind`."""
    return KINDS[kind][1](Path(d))


def check_out_dir(out, kind: str, inputs: Iterable = (), what: str = "--out") -> Path:
    """Apply the output rule to a directory output; returns the path. Raises UserError when refused."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    out = Path(out)
    check_not_input(out, inputs, what=what)
    label, recognise = KINDS[kind]
    if not out.exists() and not out.is_symlink():
        return out
    if not out.is_dir():
        raise UserError(f"refusing to write into {out}: it is a file, not a directory; choose another {what}")
    try:
        entries = _entries(out)
    except OSError as e:
        raise UserError(f"cannot read the output directory {out}: {e.strerror}") from None
    if entries and not recognise(out):
        raise UserError(f"refusing to write into {out}: it is not a kdel {label} directory; choose another {what}")
    return out


def check_out_file(out, inputs: Iterable = (), force: bool = False,
                   recognise: Callable[[Path], bool] | None = None, what: str = "output file") -> Path:
    """Apply the output rule to a file output; returns the path. Raises UserError when refused."""
    out = Path(out)
    check_not_input(out, inputs, what=what)
    if out.is_dir():
        raise UserError(f"refusing to write the {what} {out}: it is a directory; give a file name")
    if out.exists() and not force and not (recognise is not None and recognise(out)):
        raise UserError(f"refusing to overwrite {out}: it exists (use --force to replace it)")
    return out


class DirLock:
    """Exclusive writer lock on a directory (created if needed), held until `release()` or the `with` ends."""

    def __init__(self, directory, purpose: str = "kdel"):
        self.directory = Path(directory)
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> "DirLock":
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{self.directory} is in use by another kdel process (pid {holder}); "
                            f"wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def writing_into(out, kind: str, inputs: Iterable = ()) -> Iterator[Path]:
    """Check `out` by the output rule, hold its writer lock for the block, and yield it. A directory the block
    created but left with nothing written (it failed first) is removed, so a failed run leaves no trace."""
    out = Path(out)
    check_out_dir(out, kind, inputs=inputs)
    created = not out.exists()
    lock = DirLock(out, kind).acquire()
    try:
        yield out
    except BaseException:
        if created and os.listdir(out) == [LOCK_FILE]:
            os.unlink(out / LOCK_FILE)
            os.rmdir(out)
        raise
    finally:
        lock.release()
