"""The audit's plan: the deterministic case list, cached in OUT/plan.json under a key of every input that
decides it (config, model, facts, corpus, reused traces, kdel version), and the checks that can run before
the model loads.
"""

from __future__ import annotations

import json
from pathlib import Path

from kdel.audit.cases import AuditConfig, CaseSpec, build_cases, sample_targets, trace_targets
from kdel.audit.schema import PLAN_FORMAT
from kdel.errors import UserError
from kdel.io import atomic_write_json, dumps_json, read_json_object, sha256_text


def plan_key(config: AuditConfig, inputs: dict, traces_hash: str | None) -> str:
    return sha256_text(dumps_json({"config": config.to_json(), "inputs": inputs, "traces": traces_hash}))


def read_plan(out: Path | None, key: str) -> list[CaseSpec] | None:
    """The cases of OUT/plan.json when it was made under `key`, else None."""
    if out is None:
        return None
    old = read_json_object(Path(out) / "plan.json")
    if old is None or old.get("format") != PLAN_FORMAT or old.get("key") != key:
        return None
    try:
        return [CaseSpec.from_json(c) for c in old["cases"]]
    except (KeyError, TypeError):
        return None


def write_plan(out: Path, key: str, targets: list[int], specs: list[CaseSpec]) -> None:
    atomic_write_json(Path(out) / "plan.json", {"format": PLAN_FORMAT, "key": key, "targets": targets,
                                                "cases": [s.to_json() for s in specs]})


def make_plan(model, tok, table, config: AuditConfig, base, progress: bool = False) -> tuple[list[int], list[CaseSpec]]:
    """(targets, cases): sample the targets, trace them where needed, and list the cases."""
    from kdel.models.adapter import ModelAdapter

    n_layers = ModelAdapter(model, tok).n_layers
    targets = sample_targets(table, base.canonical_recalled(), config)
    traces = trace_targets(model, tok, table, targets, config, n_layers, need_peaks=config.needs_choice,
                           progress=progress)
    return targets, build_cases(table, targets, traces, config, n_layers)


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
    """Explicit --layers, --exclude-layers and --trace-window beyond the model's depth, caught from config.json
    before the model loads."""
    n_layers = model_n_layers(model_dir)
    if n_layers is None:
        return  # checked again once the model is loaded (cases.layers_for, the layer choice)
    for flag, layers in (("--layers", () if isinstance(config.layers, str) else config.layers),
                         ("--exclude-layers", config.exclude_layers)):
        for layer in layers:
            if layer >= n_layers:
                raise UserError(f"{flag}: layer {layer} is out of range: this model has layers 0..{n_layers - 1}")
    if config.needs_choice and config.trace_window is not None and config.trace_window > n_layers:
        raise UserError(f"--trace-window {config.trace_window} is larger than the model ({n_layers} layers)")
    if config.layers == "all" and len(set(config.exclude_layers)) >= n_layers:
        raise UserError("--exclude-layers leaves no layer for --layers all")


BACKENDS = ("local", "ray")


def check_backend(backend: str, workers: int, device: str = "cpu", gpus_per_worker: float | None = None) -> None:
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}: use local or ray")
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if gpus_per_worker is not None:
        g = gpus_per_worker
        if backend != "ray":
            raise UserError("--gpus-per-worker applies to --backend ray")
        if not (g >= 0) or g == float("inf"):
            raise UserError(f"--gpus-per-worker must be a number >= 0, got {g}")
        if g > 1 and g != int(g):
            raise UserError(f"--gpus-per-worker above 1 must be a whole number of GPUs, got {g}")
        if g > 0 and not str(device).startswith("cuda"):
            raise UserError("--gpus-per-worker > 0 needs --device cuda")
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError("--backend ray needs Ray, an optional extra: pip install 'kdel[ray]'") from None
