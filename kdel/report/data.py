"""Read what a report needs from audit directories: valid case files (bad ones named and skipped), the
summary re-computed from them, and the setup (audit config, model, KG, traces) where it can be found.

An audit directory holds `cases/*.json` (+ `audit_config.json`); a pipeline run holds one audit per graph
(`RUN/<graph>/audit`). `discover_audits` accepts either.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from kdel.audit.schema import CaseSchemaError
from kdel.errors import UserError
from kdel.io import read_json_object


@dataclass
class SkippedFile:
    path: Path
    reason: str


@dataclass
class AuditData:
    """One audit's cases and context, labelled (e.g. 'BA', 'ER') for side-by-side plots."""

    label: str
    audit_dir: Path
    cases: list[dict]
    skipped: list[SkippedFile] = field(default_factory=list)
    config: dict | None = None  # audit_config.json
    summary: dict | None = None  # re-computed from `cases` (kdel.audit.summary.summarize)
    kg: dict | None = None  # {"topology", "entities", "relations", "triples", "path"} when the KG is found
    model: dict | None = None  # {"path", "n_layer", "n_embd", "n_head", "params"?} when the model is found
    traces_dir: Path | None = None
    n_planned: int | None = None
    source: str = "unknown"  # "kg" (a KG bundle), "facts" (a facts file), or "unknown" (not recorded)
    facts: dict | None = None  # {"path", "n_facts"} for a facts-file audit
    title: str | None = None  # the audit config's `title`, if any
    primary: object = None  # the audit config's `primary` (dict or one-line spec), if any

    @property
    def ok_cases(self) -> list[dict]:
        return [c for c in self.cases if c["status"] == "ok"]


def read_case_file(path: Path) -> dict:
    """A validated kdel-case/1 document; raises CaseSchemaError naming what is wrong (kdel.audit.store.read_case)."""
    from kdel.audit.store import read_case

    d = read_case(path)
    if d is None:
        raise FileNotFoundError(path)
    return d


def load_cases(audit_dir: Path, strict: bool = False, warn=None) -> tuple[list[dict], list[SkippedFile]]:
    """Every valid case of `audit_dir/cases`. A bad file is reported by `warn(one line)` and skipped;
    with `strict` it is a UserError instead."""
    warn = warn or _stderr_warning
    cases_dir = Path(audit_dir) / "cases"
    if not cases_dir.is_dir():
        raise UserError(f"{audit_dir} is not an audit directory (no cases/ folder)")
    cases, skipped = [], []
    for p in sorted(cases_dir.glob("*.json")):
        try:
            cases.append(read_case_file(p))
        except CaseSchemaError as e:
            msg = f"invalid case file {p}: {e}"
            if strict:
                raise UserError(f"{msg} (--strict)") from None
            warn(f"skipping {msg}")
            skipped.append(SkippedFile(p, str(e)))
    return cases, skipped


def _stderr_warning(line: str) -> None:
    print(f"kdel: warning: {line}", file=sys.stderr)


def discover_audits(path: Path) -> list[tuple[str, Path]]:
    """(label, audit dir) pairs: `path` itself if it is an audit, else the `*/audit` audits of a pipeline run."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a directory")
    if (path / "cases").is_dir() and ((path / "audit_config.json").exists() or any((path / "cases").glob("*.json"))):
        return [(_label_for(path), path)]
    found = [(sub.name.upper(), sub / "audit") for sub in sorted(path.iterdir())
             if sub.is_dir() and (sub / "audit" / "cases").is_dir()]
    if not found:
        raise UserError(f"{path} holds no audit: expected cases/ in it, or <graph>/audit/cases/ (a pipeline run)")
    return found


def _label_for(audit_dir: Path) -> str:
    parent = audit_dir.resolve().parent
    return parent.name.upper() if audit_dir.name == "audit" else audit_dir.name




def kg_info(kg_dir: Path) -> dict | None:
    d = read_json_object(Path(kg_dir) / "kg.json")
    if d is None:
        return None
    cfg = d.get("config", {})
    degrees = [e.get("degree", 0) for e in d.get("entities", [])]
    return {"path": str(kg_dir), "topology": cfg.get("topology"), "entities": len(d.get("entities", [])),
            "relations": len(d.get("relations", [])), "triples": len(d.get("triples", [])),
            "max_degree": max(degrees) if degrees else None,
            "mean_degree": sum(degrees) / len(degrees) if degrees else None, "seed": d.get("seed")}


def model_info(model_dir: Path) -> dict | None:
    cfg = read_json_object(Path(model_dir) / "config.json")
    if cfg is None:
        return None
    out = {"path": str(model_dir), "model_type": cfg.get("model_type"),
           "n_layer": cfg.get("n_layer", cfg.get("num_hidden_layers")),
           "n_embd": cfg.get("n_embd", cfg.get("hidden_size")),
           "n_head": cfg.get("n_head", cfg.get("num_attention_heads")), "vocab_size": cfg.get("vocab_size")}
    rep = read_json_object(Path(model_dir) / "train_report.json")
    if rep:
        for k in ("steps", "seconds", "recall", "final_recall", "n_params", "params"):
            if k in rep and not isinstance(rep[k], (dict, list)):
                out[f"train_{k}"] = rep[k]
    return out


def _find_context(audit_dir: Path, config: dict | None) -> tuple[dict | None, dict | None, Path | None]:
    """KG, model and traces beside the audit: from audit_config.json, else a pipeline's sibling folders."""
    audit_dir = Path(audit_dir)
    sib = audit_dir.resolve().parent
    model_dir = None
    if config and config.get("model_dir"):
        model_dir = Path(config["model_dir"])
        if not model_dir.is_absolute() and not model_dir.exists():
            model_dir = sib / model_dir.name
    if model_dir is None or not (model_dir / "config.json").exists():
        model_dir = sib / "model"
    kg = None
    cfg_kg = (config or {}).get("kg_dir")
    for cand in ([Path(cfg_kg)] if isinstance(cfg_kg, str) and cfg_kg else []) + [sib / "kg"]:
        if (cand / "kg.json").exists():  # the audited KG (audit_config.json), else a pipeline's sibling
            kg = kg_info(cand)
            break
    traces = None
    cfg_traces = ((config or {}).get("config") or {}).get("traces_dir")
    for cand in ([Path(cfg_traces)] if cfg_traces else []) + [sib / "traces"]:
        if (cand / "traces.jsonl").exists() and (cand / "traces.npz").exists():
            traces = cand
            break
    return kg, model_info(model_dir), traces


def config_value(config: dict | None, key: str):
    """An optional setting of audit_config.json: at its top level, else inside its `config`."""
    config = config or {}
    if config.get(key) is not None:
        return config[key]
    return (config.get("config") or {}).get(key)


def facts_info(path) -> dict | None:
    """{"path", "n_facts"} of a facts file (non-empty lines), or None when it is not there."""
    p = Path(path)
    try:
        with p.open(encoding="utf-8") as f:
            n = sum(1 for line in f if line.strip())
    except (OSError, UnicodeDecodeError):
        return None
    return {"path": str(p), "n_facts": n}


def load_audit(audit_dir: Path, label: str | None = None, strict: bool = False, warn=None,
               n_boot: int = 1000) -> AuditData:
    """Cases (validated; bad files skipped or, with strict, an error), context, and the re-computed summary
    (with the primary hypothesis the audit config declares, if any)."""
    from kdel.audit.primary import parse_primary
    from kdel.audit.summary import summarize

    audit_dir = Path(audit_dir)
    cases, skipped = load_cases(audit_dir, strict=strict, warn=warn)
    if not cases:
        raise UserError(f"{audit_dir / 'cases'} holds no valid case file")
    config = read_json_object(audit_dir / "audit_config.json")
    kg, model, traces = _find_context(audit_dir, config)
    seed = int(((config or {}).get("config") or {}).get("seed", 0) or 0)
    try:
        primary = parse_primary(config_value(config, "primary"))
    except UserError as e:
        raise UserError(f"{audit_dir / 'audit_config.json'}: {e}") from None
    summary = summarize(cases, seed=seed, n_boot=n_boot, primary=primary)
    summary["skipped_files"] = [{"path": str(s.path), "reason": s.reason} for s in skipped]
    n_planned = config.get("n_cases") if config else None
    facts_path = (config or {}).get("facts")
    source = "facts" if facts_path else ("kg" if kg is not None or (config or {}).get("kg_dir") else "unknown")
    facts = (facts_info(facts_path) or {"path": str(facts_path), "n_facts": None}) if facts_path else None
    title = config_value(config, "title")
    return AuditData(label=label or _label_for(audit_dir), audit_dir=audit_dir, cases=cases, skipped=skipped,
                     config=config, summary=summary, kg=kg if source != "facts" else None, model=model,
                     traces_dir=traces, n_planned=n_planned, source=source, facts=facts,
                     title=str(title) if title else None, primary=primary)


def popularity_label(audits: list[AuditData], who: str = "subject") -> str:
    """How popularity is measured in these audits: KG degree, or mentions in a facts file."""
    sources = {a.source for a in audits}
    if sources == {"facts"}:
        return f"{who} popularity (facts mentioning it)"
    if "facts" in sources:
        return f"{who} popularity (KG degree or facts-file mentions)"
    return f"{who} degree (popularity)"
