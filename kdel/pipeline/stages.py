"""The pipeline's stages: each builds its stage's config from the preset and calls the stage's one library
function (the same one the CLI calls). `check_settings` builds every config first, so a bad preset or
`--set` value fails before stage 1, not after hours of training.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from kdel.errors import UserError
from kdel.io import read_json_object
from kdel.pipeline.presets import PipelinePreset

TRACE_METRICS = ("prob", "logit_diff")


# -- each stage's config, from the preset ---------------------------------------------------------------
def kg_config(preset: PipelinePreset, topology: str, seed: int):
    from synth_kg import KGConfig

    return KGConfig(topology=topology, entities=preset.entities, relations=preset.relations, seed=seed,
                    ba_m=preset.ba_m)


def train_config(preset: PipelinePreset, opts):
    from kdel.train import TrainConfig

    return TrainConfig(preset=preset.model_preset, seed=opts.seed, device=opts.device, threads=opts.threads,
                       target_recall=preset.target_recall, max_steps=preset.max_steps)


def trace_config(preset: PipelinePreset, opts):
    from kdel.trace import TraceConfig

    return TraceConfig(corruption="gn", direction="denoise", components=preset.trace_components,
                       metrics=TRACE_METRICS, window=1, noise_samples=preset.noise_samples, seed=opts.seed)


def audit_config(preset: PipelinePreset, opts, traces_dir: Path | None):
    from kdel.audit.cases import AuditConfig

    return AuditConfig(methods=preset.methods, objective=preset.objective, sites=preset.sites,
                       layers=preset.layers, per_bin=preset.per_bin, n_bins=preset.n_bins,
                       unrelated_size=preset.unrelated_size, seed=opts.seed,
                       traces_dir=str(Path(traces_dir).resolve()) if traces_dir else None,
                       tracing_effect=preset.tracing_effect, noise_samples=preset.noise_samples)


def check_settings(preset: PipelinePreset, opts) -> None:
    """Every stage's settings, validated before anything runs (UserError naming the preset)."""
    from kdel.delete import get_method
    from kdel.train import get_preset as get_model_preset

    try:
        preset.validate()
        if opts.workers < 1:
            raise UserError(f"--workers must be >= 1, got {opts.workers}")
        for graph in preset.graphs:
            kg_config(preset, graph, opts.seed).validate()
        train_config(preset, opts).validate()
        n_layers = get_model_preset(preset.model_preset).n_layer
        if preset.trace_limit:
            trace_config(preset, opts).validate(n_layers)
        audit_config(preset, opts, None).validate()
        for m in preset.methods:
            supported = get_method(m).objectives
            if preset.objective not in supported:
                raise UserError(f"method {m!r} does not support objective {preset.objective!r} "
                                f"(it supports {', '.join(supported)})")
        if not isinstance(preset.layers, str):
            bad = [layer for layer in preset.layers if layer >= n_layers]
            if bad:
                raise UserError(f"layer {bad[0]} is out of range: the {preset.model_preset} model has layers "
                                f"0..{n_layers - 1}")
    except UserError as e:
        raise UserError(f"pipeline preset {preset.name!r} (with any --set): {e}") from None


# -- is a stage's output there and whole? -------------------------------------------------------------
def kg_done(d: Path) -> bool:
    if not (d / "kg.json").exists():
        return False
    try:
        from synth_kg import KnowledgeGraph

        KnowledgeGraph.load(d)
        return True
    except Exception:  # noqa: BLE001 - a bundle that does not load is not done
        return False


def model_done(d: Path) -> bool:
    return ((d / "config.json").exists() and any(d.glob("*.safetensors"))
            and read_json_object(d / "train_report.json") is not None)


def traces_done(d: Path) -> bool:
    return (d / "traces.jsonl").exists() and (d / "traces.npz").exists()


def audit_done(d: Path) -> bool:
    """Every planned case has a valid file and summary.json exists."""
    from kdel.audit.schema import CaseSchemaError
    from kdel.report.data import read_case_file

    cfg = read_json_object(d / "audit_config.json")
    if cfg is None or read_json_object(d / "summary.json") is None:
        return False
    for cid in cfg.get("case_ids", []):
        try:
            read_case_file(d / "cases" / f"{cid}.json")
        except (OSError, CaseSchemaError):
            return False
    return True


# -- the stages: one library call each ------------------------------------------------------------------
def stage_kg(preset: PipelinePreset, topology: str, out: Path, opts) -> None:
    from kdel.kg import generate_kg

    generate_kg(out, kg_config(preset, topology, opts.seed))


def stage_model(preset: PipelinePreset, kg_dir: Path, out: Path, opts) -> None:
    from kdel.train import train_model

    rep = train_model(kg_dir, out, train_config(preset, opts), progress=opts.progress)
    if not rep.reached_target:
        warnings.warn(f"{out} stopped at the step cap below the target recall {preset.target_recall}",
                      stacklevel=2)


def stage_traces(preset: PipelinePreset, kg_dir: Path, model_dir: Path, out: Path, opts) -> None:
    from kdel.trace.stage import run_trace

    run_trace(model_dir, out, kg=kg_dir, config=trace_config(preset, opts), spread=preset.trace_limit,
              device=opts.device, progress=opts.progress)


def stage_audit(preset: PipelinePreset, kg_dir: Path, model_dir: Path, traces_dir: Path | None, out: Path,
                opts) -> None:
    from kdel.audit.runner import run_audit
    from kdel.facts import load_fact_table

    table = load_fact_table(kg=kg_dir)
    run_audit(model_dir, table, out, audit_config(preset, opts, traces_dir), workers=opts.workers,
              progress=opts.progress, device=opts.device, threads=opts.threads, kg_dir=kg_dir)
