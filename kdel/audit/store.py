"""Case files of an audit directory: where they live, atomic validated writes, reads, fingerprints, and the
resume scan. The runner and both backends use this module; none of them imports another.

Fingerprint of a case: sha256 over everything that decides its result, recorded in the case file with the
inputs themselves (so a resume can say what changed):
  case_format, kdel_version   the case format and the kdel release (metric code is versioned by releases;
                              the exact commit and a hash of the sources are recorded in `provenance`)
  model      hash of the weights (*.safetensors), config.json and tokenizer files of the model directory
  facts      the KG bundle's content hash, or the facts file's sha256
  corpus     hash of the key-statistics corpus (a KG's corpus, or --corpus; "self:N:<hash>" for sampled text),
             or "none" (the facts' own prompts)
  probe      unrelated-sample size and seed, popularity bins and stratifier
  tracing    whether Hase's tracing effect is computed, its noise samples and window
  fluency    whether fluency is measured, and its thresholds (they decide `wrecked`)
  spec       the planned case: fact ids, method, resolved hyperparameters, objective, layer, site, seed, new
             targets, traced peaks and tracing effect, bins
Device, threads and library versions are not in it (they change results only by rounding): `provenance`
records them.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from kdel.audit.cases import HASE_WINDOW, AuditConfig, CaseSpec
from kdel.audit.schema import CASE_FORMAT, CaseRecord, CaseSchemaError, FingerprintRecord, validate_case
from kdel.errors import UserError
from kdel.io import atomic_write_json, dumps_json, sha256_file, sha256_text

CASES_DIR = "cases"
SUPERSEDED_DIR = "superseded"  # case files set aside by a resume (other settings, or unreadable): never deleted
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
               "merges.txt", "tokenizer.model", "added_tokens.json")


class ResumeWarning(UserWarning):
    """A resume found case files it cannot reuse (computed under other settings, or unreadable)."""


# -- paths, writes, reads ---------------------------------------------------------------------------------
def run_locked(body, model_dir, table, out_dir, config, *, kg_dir=None, corpus=None, inputs=(), **kwargs):
    """Validate `config`, then `body(model_dir, table, OUT, config, corpus=corpus, **kwargs)` while holding OUT
    under kdel's output rule (never an input; kdel's own audit directory only; one writer)."""
    from kdel.outputs import writing_into

    config.validate()
    out = Path(out_dir)
    with writing_into(out, "audit", inputs=[model_dir, table.facts_path, kg_dir, corpus, *inputs]):
        return body(model_dir, table, out, config, corpus=corpus, **kwargs)


def case_path(out, case_id: str) -> Path:
    return Path(out) / CASES_DIR / f"{case_id}.json"


def write_case(out, rec: CaseRecord) -> Path:
    """Validate the record's JSON (a file a rerun would reject is never written) and write it atomically."""
    d = rec.to_json()
    validate_case(json.loads(dumps_json(d)), rec.case_id)
    path = case_path(out, rec.case_id)
    atomic_write_json(path, d)
    return path


def read_case(path) -> dict | None:
    """A case file's validated content, or None when it does not exist; CaseSchemaError when it is unreadable,
    not JSON, or not a valid case of its file name."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as e:
        raise CaseSchemaError(f"not UTF-8 text ({e.reason})") from None
    if not text.strip():
        raise CaseSchemaError("empty file")
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise CaseSchemaError(f"not valid JSON, truncated or corrupted ({e.msg}: line {e.lineno})") from None
    validate_case(d, path.stem)
    return d


# -- identities and fingerprints ------------------------------------------------------------------------
def model_identity(model_dir) -> str:
    """Content hash of a model directory's weights, config and tokenizer files."""
    d = Path(model_dir)
    files = sorted(d.glob("*.safetensors")) + [d / n for n in MODEL_FILES]
    return sha256_text("\n".join(f"{p.name}:{sha256_file(p)}" for p in files if p.is_file()))


def corpus_identity(table, corpus=None) -> str:
    """Hash of the text the table carries (kdel.delete.prepare.attach puts a --corpus file or a sampled self:N
    corpus there), prefixed with self:N for sampled text; "none" when the facts' prompts stand in (thin)."""
    if not table.corpus:
        return "none"
    spec = (table.meta or {}).get("corpus_spec") or {}
    digest = sha256_text("\n".join(table.corpus))
    return f"{spec['spec']}:{digest}" if spec.get("source") == "self" else digest


def traces_identity(traces_dir) -> str | None:
    """Hash of a reused trace run's files (its peaks decide layers=auto), or None."""
    if not traces_dir:
        return None
    d = Path(traces_dir)
    return sha256_text("\n".join(f"{p.name}:{sha256_file(p)}" for p in sorted(d.iterdir()) if p.is_file()))


def _normal(x):
    return json.loads(dumps_json(x))


def run_inputs(model_hash: str, table, config: AuditConfig, corpus=None) -> dict:
    """The fingerprint inputs shared by every case of a run (all but the case's own spec)."""
    return _normal({
        "case_format": CASE_FORMAT,
        "kdel_version": _kdel_version(),
        "model": model_hash,
        "facts": f"{table.source}:{table.source_hash}",
        "corpus": corpus_identity(table, corpus),
        "probe": {"unrelated_size": config.unrelated_size, "unrelated_seed": config.seed,
                  "n_bins": config.n_bins, "stratify": config.stratify},
        "tracing": {"tracing_effect": config.tracing_effect, "noise_samples": config.noise_samples,
                    "window": HASE_WINDOW},
        "fluency": config.fluency_json(),
    })


def _kdel_version() -> str:
    from kdel import __version__

    return __version__


def case_fingerprint(inputs: dict, spec: CaseSpec) -> FingerprintRecord:
    full = _normal({**inputs, "spec": {k: v for k, v in spec.to_json().items() if k != "case_id"}})
    return FingerprintRecord(hash=sha256_text(dumps_json(full)), inputs=full)


def _short(v) -> str:
    if isinstance(v, str) and len(v) >= 32:  # a hash, maybe with a prefix ("kg:..."): its first 8 digits
        head, _, tail = v.rpartition(":")
        return (head + ":" if head else "") + tail[:8]
    text = json.dumps(v, sort_keys=True)
    return text if len(text) <= 30 else text[:27] + "..."


def describe_changes(old: dict, new: dict) -> list[str]:
    """What differs between two fingerprints' inputs, e.g. ['probe.unrelated_size 0 -> 100']."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k} {_short(a.get(k))} -> {_short(b.get(k))}" for k in sorted(set(a) | set(b))
                    if a.get(k) != b.get(k)]
        else:
            out.append(f"{key} {_short(a)} -> {_short(b)}")
    return out


# -- the resume scan ------------------------------------------------------------------------------------
@dataclass
class Unusable:
    path: Path
    case_id: str
    changes: list[str]  # what differs (other settings), or why the file is unreadable
    tag: str  # for the set-aside file name


@dataclass
class ScanResult:
    done: dict[str, dict] = field(default_factory=dict)  # planned case id -> its valid, matching case
    todo: list[CaseSpec] = field(default_factory=list)
    stale: list[Unusable] = field(default_factory=list)  # computed under other settings
    invalid: list[Unusable] = field(default_factory=list)  # planned cases whose file cannot be read


def _stale_reason(d: dict, want: dict | None, inputs: dict) -> list[str] | None:
    """None when the case matches; else what differs. `want`: the planned fingerprint (None: unplanned file,
    compared on the run-level inputs only)."""
    fp = d.get("fingerprint")
    if fp is None:
        return ["no fingerprint (written by an older kdel)"]
    if want is not None:
        return None if fp["hash"] == want["hash"] else describe_changes(fp["inputs"], want["inputs"]) or ["fingerprint"]
    old = {k: v for k, v in fp["inputs"].items() if k != "spec"}
    return None if old == inputs else describe_changes(old, inputs)


def scan_cases(out, specs: list[CaseSpec], fingerprints: dict[str, FingerprintRecord], inputs: dict) -> ScanResult:
    """Sort the planned cases into done (valid file, same fingerprint) and to-do; list the files that were
    computed under other settings (planned or not) and the planned files that cannot be read."""
    res = ScanResult()
    planned = set()
    for s in specs:
        planned.add(s.case_id)
        p = case_path(out, s.case_id)
        try:
            d = read_case(p)
        except CaseSchemaError as e:
            res.invalid.append(Unusable(p, s.case_id, [str(e)], "invalid"))
            res.todo.append(s)
            continue
        if d is None:
            res.todo.append(s)
            continue
        why = _stale_reason(d, fingerprints[s.case_id].to_json(), inputs)
        if why is None:
            res.done[s.case_id] = d
        else:
            res.stale.append(Unusable(p, s.case_id, why, (d.get("fingerprint") or {}).get("hash", "old")[:12]))
            res.todo.append(s)
    cases_dir = Path(out) / CASES_DIR
    for p in sorted(cases_dir.glob("*.json")) if cases_dir.is_dir() else []:
        if p.stem in planned:
            continue
        try:
            d = read_case(p)
        except CaseSchemaError:
            continue  # not ours to judge: the report names it
        why = _stale_reason(d, None, inputs)
        if why is not None:
            res.stale.append(Unusable(p, p.stem, why, (d.get("fingerprint") or {}).get("hash", "old")[:12]))
    return res


def _summarise(items: list[Unusable], limit: int = 4) -> str:
    counts = Counter(c for u in items for c in u.changes)
    parts = [c for c, _ in counts.most_common(limit)]
    more = len(counts) - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def report_unusable(out, res: ScanResult, recompute: bool) -> None:
    """One warning line per kind of unusable file; with recompute=False, stale files are a UserError."""
    kept = Path(out) / SUPERSEDED_DIR
    if res.stale and not recompute:
        raise UserError(f"{_files(len(res.stale))} in {out} {_were(len(res.stale))} computed under other settings "
                        f"({_summarise(res.stale)}); --no-recompute refuses to recompute them: rerun with the "
                        f"settings they were computed under, or choose another --out")
    if res.invalid:
        warnings.warn(f"{_files(len(res.invalid))} {_were(len(res.invalid), 'is', 'are')} invalid "
                      f"({_summarise(res.invalid, 2)}): recomputing; the old files are kept in {kept}",
                      ResumeWarning, stacklevel=3)
    if res.stale:
        warnings.warn(f"{_files(len(res.stale))} {_were(len(res.stale))} computed under other settings "
                      f"({_summarise(res.stale)}): recomputing them; the old files are kept in {kept}",
                      ResumeWarning, stacklevel=3)


def _files(n: int) -> str:
    return f"{n} case file" + ("" if n == 1 else "s")


def _were(n: int, one: str = "was", many: str = "were") -> str:
    return one if n == 1 else many


def set_aside(out, items: list[Unusable]) -> list[Path]:
    """Move unusable case files to OUT/superseded/ (a rename: nothing is deleted)."""
    dest_dir = Path(out) / SUPERSEDED_DIR
    moved = []
    for u in items:
        if not u.path.exists():
            continue
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest, n = dest_dir / f"{u.case_id}.{u.tag}.json", 1
        while dest.exists():
            n += 1
            dest = dest_dir / f"{u.case_id}.{u.tag}.{n}.json"
        os.replace(u.path, dest)
        moved.append(dest)
    return moved


def set_aside_run_files(out, config_json: dict, inputs: dict, stale: bool) -> list[Path]:
    """When OUT's audit_config.json records other settings than this run's, or case files of other settings
    were found (`stale`), move audit_config.json and summary.json (which describe those cases) to
    OUT/superseded/ before they are replaced."""
    from kdel.io import read_json_object

    out = Path(out)
    old = read_json_object(out / "audit_config.json")
    if not stale and (old is None or (old.get("config") == _normal(config_json) and old.get("inputs") == inputs)):
        return []
    tag = "run-" + sha256_text(dumps_json(old) if old else "no-config")[:12]
    items = [Unusable(out / name, name.split(".")[0], [], tag) for name in ("audit_config.json", "summary.json")]
    return set_aside(out, items)

