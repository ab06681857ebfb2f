"""The fit stage (`kdel risk fit`): audits in, a risk model file (JSON parameters) out.

Every audit is read and checked before any model loads (no cases, no per-fact outcomes, a missing model:
one line, exit 2). The output file follows kdel's output rule: never an input, never a file kdel did not
write as a risk model unless `force`.
"""

from __future__ import annotations

from pathlib import Path

from kdel.errors import UserError


def run_fit(audits, out, settings=None, force: bool = False, cache_dir=None, device: str | None = None,
            progress: bool = True):
    """(RiskModel, cross-validation report); the model is written to `out`."""
    from kdel.delete.stage import default_cache_dir
    from kdel.outputs import check_out_file
    from kdel.provenance import provenance
    from kdel.risk.data import Rows, audit_rows, read_audit
    from kdel.risk.fit import FitSettings, fit_rows
    from kdel.risk.model import is_risk_model_file
    from kdel.runtime import resolve_device

    settings = settings or FitSettings()
    settings.validate()
    audits = [Path(a) for a in audits]
    if not audits:
        raise UserError("give at least one audit directory")
    if len({a.resolve() for a in audits}) != len(audits):
        raise UserError("the same audit directory is given twice")
    sources = [read_audit(a) for a in audits]
    inputs = [*audits] + [p for s in sources for p in (s.model_dir, s.kg_dir, s.facts, s.corpus) if p]
    check_out_file(out, inputs=inputs, force=force, recognise=is_risk_model_file, what="risk model file")
    dev = resolve_device(device)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    rows = Rows.concat([audit_rows(s, cache, dev, progress) for s in sources])
    model, report = fit_rows(rows, settings, progress=False)
    model.training["audits"] = [{"path": str(s.path.resolve()), "identity": s.identity, "cases": len(s.cases)}
                                for s in sources]
    model.provenance = provenance(dev)
    model.save(out)
    return model, report
