"""Resumable record files for the audits whose unit is not a single-fact case (sequential trials, entity cases).

Each unit is one JSON file `<dir>/<id>.json` with a `format`, its `id` and a `fingerprint` = {hash, inputs}:
sha256 over everything that decides its result (as for case files, kdel.audit.store). A rerun reuses a file
only when it parses, has the expected format and id, and its fingerprint hash equals the planned one; other
files of planned units (other settings, truncated, edited) are moved to `superseded/` (never deleted) and
recomputed, with one warning line per kind.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from kdel.audit.store import ResumeWarning, describe_changes
from kdel.errors import UserError
from kdel.io import atomic_write_json, dumps_json, sha256_text


def fingerprint(inputs: dict) -> dict:
    inputs = json.loads(dumps_json(inputs))
    return {"hash": sha256_text(dumps_json(inputs)), "inputs": inputs}


def unit_id(spec: dict) -> str:
    """First 16 hex digits of sha256 over the unit's spec."""
    return sha256_text(dumps_json(spec))[:16]


def read_unit(path: Path, fmt: str) -> dict:
    """The file's content; ValueError (with the reason) when it is unreadable or not a unit of `fmt`."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"unreadable ({type(e).__name__})") from None
    if not isinstance(d, dict) or d.get("format") != fmt:
        raise ValueError(f"not a {fmt} file")
    if d.get("id") != path.stem:
        raise ValueError("its id differs from its file name")
    fp = d.get("fingerprint")
    if not isinstance(fp, dict) or not isinstance(fp.get("hash"), str) or not isinstance(fp.get("inputs"), dict):
        raise ValueError("no fingerprint")
    return d


@dataclass
class Scan:
    done: dict[str, dict] = field(default_factory=dict)
    todo: list[str] = field(default_factory=list)
    stale: list[tuple[Path, list[str]]] = field(default_factory=list)  # other settings: what changed
    invalid: list[tuple[Path, str]] = field(default_factory=list)


def scan_units(directory: Path, planned: dict[str, dict], fmt: str) -> Scan:
    """Sort the planned unit ids (id -> fingerprint) into done and to-do."""
    res = Scan()
    for uid, fp in planned.items():
        path = Path(directory) / f"{uid}.json"
        if not path.exists():
            res.todo.append(uid)
            continue
        try:
            d = read_unit(path, fmt)
        except ValueError as e:
            res.invalid.append((path, str(e)))
            res.todo.append(uid)
            continue
        if d["fingerprint"]["hash"] == fp["hash"]:
            res.done[uid] = d
        else:
            res.stale.append((path, describe_changes(d["fingerprint"]["inputs"], fp["inputs"]) or ["fingerprint"]))
            res.todo.append(uid)
    return res


def settle(scan: Scan, superseded: Path, recompute: bool, what: str = "file") -> None:
    """Warn about (or, with recompute=False, refuse) unusable files, then move them to `superseded`."""
    if scan.stale and not recompute:
        changes = sorted({c for _, cs in scan.stale for c in cs})
        raise UserError(f"{len(scan.stale)} {what}(s) were computed under other settings ({'; '.join(changes[:4])}); "
                        f"--no-recompute refuses to recompute them: rerun with those settings or choose another --out")
    if scan.invalid:
        warnings.warn(f"{len(scan.invalid)} {what}(s) are invalid ({scan.invalid[0][1]}): recomputing; the old "
                      f"files are kept in {superseded}", ResumeWarning, stacklevel=3)
    if scan.stale:
        changes = sorted({c for _, cs in scan.stale for c in cs})
        warnings.warn(f"{len(scan.stale)} {what}(s) were computed under other settings ({'; '.join(changes[:4])}): "
                      f"recomputing them; the old files are kept in {superseded}", ResumeWarning, stacklevel=3)
    for path, _ in scan.stale + scan.invalid:
        set_aside(path, superseded)


def set_aside(path: Path, superseded: Path) -> Path:
    superseded.mkdir(parents=True, exist_ok=True)
    dest, n = superseded / path.name, 1
    while dest.exists():
        n += 1
        dest = superseded / f"{path.stem}.{n}{path.suffix}"
    os.replace(path, dest)
    return dest


def write_unit(directory: Path, record: dict) -> Path:
    path = Path(directory) / f"{record['id']}.json"
    atomic_write_json(path, record)
    return path
