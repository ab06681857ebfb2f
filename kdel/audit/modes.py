"""The two audit modes beside the single-fact audit, as `kdel audit` flags select them:
`--sequential N` (kdel.audit.sequential_run) and `--forget-entities K` (kdel.audit.entity). Returns the line
the CLI prints."""

from __future__ import annotations

from pathlib import Path

from kdel.errors import UserError


def run_mode(model, table, out, audit_config, *, sequential=None, orders=("random",), trials=3, every=1,
             forget_entities=None, as_object=False, progress=True, device="cpu", kg_dir=None, corpus=None,
             recompute=True, inputs=(), workers=1, backend="local") -> str:
    if sequential is not None and forget_entities is not None:
        raise UserError("--sequential and --forget-entities are two audits: run them one after the other")
    if workers != 1 or backend != "local":
        raise UserError("--sequential and --forget-entities run in one process: drop --workers/--backend")
    if as_object and forget_entities is None:
        raise UserError("--as-object goes with --forget-entities")
    if sequential is not None:
        from kdel.audit.sequential import SequentialConfig
        from kdel.audit.sequential_run import FIGURE, SEQ_DIR, run_sequential_audit

        config = SequentialConfig.from_audit(audit_config, sequential, orders, trials, every)
        summary = run_sequential_audit(model, table, out, config, progress=progress, device=device, kg_dir=kg_dir,
                                       corpus=corpus, recompute=recompute, inputs=inputs)
        lines = []
        for c in summary["curves"]:
            acc = c["metrics"]["global_acc"]["mean"][-1]
            below = c["below"]["mean_curve"]
            lines.append(f"  {c['method']} {c['order']}: retained accuracy after {c['steps'][-1]} deletions "
                         f"{'n/a' if acc is None else f'{acc:.3f}'} (mean of {c['n_trials']}); below 0.9 "
                         f"{'never' if below is None else f'from N = {below}'}")
        return "\n".join([f"{summary['n_trials']} sequential trials ({summary['timing']['trials_run']} run now) -> "
                          f"{Path(out) / SEQ_DIR / 'summary.json'}, {Path(out) / SEQ_DIR / FIGURE}"] + lines)
    from kdel.audit.entity import ENTITY_DIR, EntityAuditConfig, run_entity_audit

    config = EntityAuditConfig.from_audit(audit_config, forget_entities, as_object)
    summary = run_entity_audit(model, table, out, config, progress=progress, device=device, kg_dir=kg_dir,
                               corpus=corpus, recompute=recompute, inputs=inputs)
    return (f"{summary['n_cases']} entity cases ({summary['n_ok']} ok, {summary['n_error']} errors; "
            f"{summary['timing']['cases_run']} run now) -> {Path(out) / ENTITY_DIR / 'summary.json'}")
