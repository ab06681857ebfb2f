"""`run_audit`: plan the cases, run the unfinished ones (in-process, N local workers, or Ray), summarise.

Output directory:
  audit_config.json   the config, the model's and facts' identities, the case ids (written first)
  plan.json           the planned cases with their trace data (reused by a rerun of the same config)
  cases/<id>.json     one kdel-case/1 file per case, written atomically when the case finishes
  summary.json        statistics over all cases of the plan (summary.summarize)
A rerun skips every valid case file; a truncated or corrupted one is recomputed with a warning.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

from kdel.audit.cases import AuditConfig, CaseSpec, build_cases, sample_targets, trace_targets
from kdel.audit.schema import CONFIG_FORMAT, CaseSchemaError, validate_case
from kdel.errors import UserError
from kdel.io import atomic_write_json, dumps_json, sha256_file, sha256_text

BACKENDS = ("local", "ray")
PLAN_FORMAT = "kdel-audit-plan/1"


def model_identity(model_dir) -> str:
    """Content hash of a model directory's weights and config (which model the cases belong to)."""
    d = Path(model_dir)
    parts = [f"{p.name}:{sha256_file(p)}" for p in sorted(d.glob("*.safetensors")) + [d / "config.json"] if p.is_file()]
    return sha256_text("\n".join(parts))


def case_path(out_dir: Path, case_id: str) -> Path:
    return Path(out_dir) / "cases" / f"{case_id}.json"


def load_case(path: Path, spec: CaseSpec | None = None) -> dict | None:
    """A finished case file's content, or None (missing). Invalid files raise CaseSchemaError."""
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CaseSchemaError(f"not valid JSON ({e})") from None
    validate_case(d, path.stem)
    if spec is not None and d["spec"] != spec.spec_json():
        raise CaseSchemaError("its spec differs from the planned case")
    return d


def finished_cases(out_dir: Path, specs: list[CaseSpec]) -> tuple[dict[str, dict], list[CaseSpec]]:
    done, todo = {}, []
    for s in specs:
        p = case_path(out_dir, s.case_id)
        try:
            d = load_case(p, s)
        except CaseSchemaError as e:
            warnings.warn(f"case file {p} is invalid ({e}); recomputing it", stacklevel=2)
            d = None
        if d is None:
            todo.append(s)
        else:
            done[s.case_id] = d
    return done, todo


def _check_backend(backend: str, workers: int) -> None:
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}: use local or ray")
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError("--backend ray needs Ray, an optional extra: pip install 'kdel[ray]'") from None


def _identity(model_dir, table) -> dict:
    return {"model_hash": model_identity(model_dir), "facts_key": table.key_text(), "facts_source": table.source}


def _check_out_dir(out: Path, identity: dict) -> None:
    cfg = out / "audit_config.json"
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a directory")
    if cfg.exists():
        try:
            old = json.loads(cfg.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return  # a config cut short by a crash: rewritten below
        old_id = old.get("identity", {})
        for k in ("model_hash", "facts_key"):
            if old_id.get(k) and old_id[k] != identity[k]:
                what = "model" if k == "model_hash" else "facts"
                raise UserError(f"{out} holds an audit of another {what}: use a fresh --out directory")


def plan_audit(model, tok, table, config: AuditConfig, base, out: Path | None, identity: dict,
               progress: bool = False) -> list[CaseSpec]:
    """The deterministic case list (reused from plan.json when config and identity match)."""
    from kdel.models.adapter import ModelAdapter

    key = sha256_text(dumps_json({"config": config.to_json(), "identity": identity}))
    plan_file = out / "plan.json" if out is not None else None
    if plan_file is not None and plan_file.exists():
        try:
            old = json.loads(plan_file.read_text(encoding="utf-8"))
            if old.get("format") == PLAN_FORMAT and old.get("key") == key:
                return [CaseSpec.from_json(c) for c in old["cases"]]
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    n_layers = ModelAdapter(model, tok).n_layers
    targets = sample_targets(table, base.canonical_recalled(), config)
    traces = trace_targets(model, tok, table, targets, config, n_layers, need_peaks=config.layers == "auto",
                           progress=progress)
    specs = build_cases(table, targets, traces, config, n_layers)
    if plan_file is not None:
        atomic_write_json(plan_file, {"format": PLAN_FORMAT, "key": key, "targets": targets,
                                      "cases": [s.to_json() for s in specs]})
    return specs


def model_n_layers(model_dir) -> int | None:
    """The layer count in a model directory's config.json, or None where it does not say."""
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(cfg, dict):
        return None
    for key in ("n_layer", "num_hidden_layers", "n_layers", "num_layers"):
        if isinstance(cfg.get(key), int) and not isinstance(cfg.get(key), bool):
            return cfg[key]
    return None


def check_layers(model_dir, config: AuditConfig) -> None:
    """Explicit --layers beyond the model's depth, caught from config.json before the model loads."""
    if isinstance(config.layers, str):
        return
    n_layers = model_n_layers(model_dir)
    if n_layers is None:
        return  # checked again once the model is loaded (cases.layers_for)
    for layer in config.layers:
        if layer >= n_layers:
            raise UserError(f"--layers: layer {layer} is out of range: this model has layers 0..{n_layers - 1}")


def _abs(path) -> str | None:
    return None if path is None else str(Path(path).resolve())


def run_audit(model_dir, table, out_dir, config: AuditConfig, workers: int = 1, backend: str = "local",
              progress: bool = True, device: str = "cpu", threads: int | None = None, kg_dir=None,
              corpus=None) -> dict:
    """Run (or resume) an audit; returns the summary (also written to OUT/summary.json).

    `kg_dir` (the KG bundle the table came from) and `corpus` (the --facts corpus file) are recorded in
    audit_config.json, with the model and facts paths, as absolute paths, so a report can find them."""
    from kdel.audit.evaluate import BaseScores
    from kdel.audit.summary import summarize
    from kdel.models.loading import load_model_for_table

    config.validate()
    _check_backend(backend, workers)
    check_layers(model_dir, config)
    out = Path(out_dir)
    identity = _identity(model_dir, table)
    _check_out_dir(out, identity)
    model, tok = load_model_for_table(model_dir, table, device)  # bad model/facts fail before OUT is created
    out.mkdir(parents=True, exist_ok=True)
    pool = table.unrelated_sample(config.unrelated_size, config.seed)
    base = BaseScores.compute(model, tok, table, pool)
    specs = plan_audit(model, tok, table, config, base, out, identity, progress=progress)
    atomic_write_json(out / "audit_config.json", {
        "format": CONFIG_FORMAT,
        "config": config.to_json(),
        "identity": identity,
        "model_dir": _abs(model_dir),
        "kg_dir": _abs(kg_dir),
        "facts": _abs(table.meta.get("path")) if table.source == "facts" else None,
        "corpus": _abs(corpus),
        "unrelated_pool": pool,
        "case_ids": [s.case_id for s in specs],
        "n_cases": len(specs),
    })
    done, todo = finished_cases(out, specs)
    t0 = time.perf_counter()
    bar = _progress(len(specs), len(done), progress)
    try:
        if not todo:
            pass
        elif backend == "ray":
            from kdel.audit.ray_backend import run_ray

            del model
            run_ray(model_dir, table, out, config, todo, workers, device, threads, bar)
        elif workers == 1:
            from kdel.audit.execute import CaseExecutor

            ex = CaseExecutor(model, tok, table, config, base, cache_dir=out / "cache")
            for s in todo:
                write_case(out, ex.run(s))
                bar.update(1)
        else:
            from kdel.audit.workers import run_local_workers

            del model
            run_local_workers(model_dir, table, out, config, todo, workers, device, threads, bar)
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    cases = []
    for s in specs:
        d = load_case(case_path(out, s.case_id), s)
        if d is None:
            raise RuntimeError(f"case {s.case_id} has no file after the run")
        cases.append(d)
    summary = summarize(cases, seed=config.seed)
    summary["timing"]["run_wall_s"] = wall
    summary["timing"]["cases_run"] = len(todo)
    summary["timing"]["workers"] = workers
    summary["timing"]["backend"] = backend
    atomic_write_json(out / "summary.json", summary)
    return summary


def write_case(out: Path, doc: dict) -> None:
    validate_case(doc, doc["case_id"])  # never write a file a rerun would reject
    atomic_write_json(case_path(out, doc["case_id"]), doc)


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress(total: int, done: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="audit", unit="case", file=sys.stderr, smoothing=0.1)
