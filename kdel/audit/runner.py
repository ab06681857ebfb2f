"""`run_audit`: plan the cases, run the unfinished ones (in-process, N local workers, or Ray), summarise.

Output directory (one writer at a time: an flock on OUT/.kdel.lock held for the whole run):
  audit_config.json   the config, the fingerprint inputs, provenance, the case ids (written before the cases)
  plan.json           the planned cases with their trace data (reused while every input that decides it is equal)
  cases/<id>.json     one case file per case, written atomically by this process when the case finishes
  superseded/         case files a resume could not reuse (other settings, unreadable), and the config and summary
                      of a run under other settings: moved here, never deleted
  summary.json        statistics over all cases of the plan (summary.summarize), with provenance
A resume reuses a case file only when it is valid and its fingerprint equals the planned case's (store.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from kdel.audit import store
from kdel.audit.cases import AuditConfig
from kdel.audit.plan import check_backend, check_layers, make_plan, plan_key, read_plan, write_plan
from kdel.audit.schema import CONFIG_FORMAT, CaseRecord
from kdel.io import atomic_write_json
from kdel.outputs import writing_into


class CaseSink:
    """Where finished cases go: fingerprint attached, validated, written atomically, counted once."""

    def __init__(self, out: Path, fingerprints: dict, bar):
        self.out, self.fingerprints, self.bar = out, fingerprints, bar
        self.written: set[str] = set()

    def __call__(self, case) -> None:
        rec = case if isinstance(case, CaseRecord) else CaseRecord.from_json(case)
        if rec.case_id in self.written:
            raise RuntimeError(f"case {rec.case_id} came back twice")
        rec.fingerprint = self.fingerprints[rec.case_id]
        store.write_case(self.out, rec)
        self.written.add(rec.case_id)
        self.bar.update(1)


def _abs(path) -> str | None:
    return None if path is None else str(Path(path).resolve())


def _corpus_spec(checked) -> str | None:
    """What audit_config.json records as `corpus`: the file's absolute path, the self:N spec, or None."""
    from kdel.delete.corpus import Corpus

    if checked is None:
        return None
    return checked.spec if isinstance(checked, Corpus) else str(checked)


def run_audit(model_dir, table, out_dir, config: AuditConfig, workers: int = 1, backend: str = "local",
              progress: bool = True, device: str = "cpu", threads: int | None = None, kg_dir=None,
              corpus=None, recompute: bool = True, gpus_per_worker: float | None = None, inputs=()) -> dict:
    """Run (or resume) an audit; returns the summary (also written to OUT/summary.json).

    `kg_dir` (the KG bundle the table came from) is recorded in audit_config.json as an absolute path, so a
    report can find it. `corpus` (--corpus: a text file, "self:N", or a `Corpus`; None keeps the table's own) is
    resolved once, here, and attached to the table every worker gets; sampled text is written to OUT/corpus.txt,
    and the spec with its hash and token counts is recorded. `config.fluency` None means: on unless kdel trained
    the model (kdel.models.loading.kdel_trained). OUT must follow the output rule
    (kdel.outputs.check_out_dir: missing, empty or an audit directory; never one of the inputs, of which
    `inputs` names extra ones such as the hyperparameters file). `recompute=False` (--no-recompute) refuses
    to recompute case files computed under other settings."""
    import dataclasses

    from kdel.delete.corpus import Corpus
    from kdel.delete.prepare import check_corpus_spec
    from kdel.models.loading import kdel_trained

    config.validate()
    check_backend(backend, workers, device, gpus_per_worker)
    check_layers(model_dir, config)
    corpus = check_corpus_spec(corpus)
    if config.fluency is None:
        config = dataclasses.replace(config, fluency=not kdel_trained(model_dir))
    out = Path(out_dir)
    facts_path = table.facts_path
    corpus_file = corpus.spec if isinstance(corpus, Corpus) and corpus.source == "file" else None
    with writing_into(out, "audit", inputs=[model_dir, facts_path, kg_dir, corpus_file, config.traces_dir, *inputs]):
        return _run_locked(model_dir, table, out, config, workers, backend, progress, device, threads, kg_dir,
                           corpus, recompute, gpus_per_worker)


def _run_locked(model_dir, table, out: Path, config: AuditConfig, workers, backend, progress, device, threads,
                kg_dir, corpus, recompute, gpus_per_worker) -> dict:
    from kdel.audit.evaluate import BaseScores
    from kdel.audit.summary import summarize
    from kdel.delete.prepare import attach, corpus_record, write_self_corpus
    from kdel.models.loading import load_model_for_table
    from kdel.provenance import provenance

    model_hash = store.model_identity(model_dir)
    model, tok = load_model_for_table(model_dir, table, device)
    table = attach(table, corpus, model, tok, config.seed)  # self:N is sampled here, once, for every worker
    pool = table.unrelated_sample(config.unrelated_size, config.seed)
    base = BaseScores.compute(model, tok, table, pool)
    inputs = store.run_inputs(model_hash, table, config)
    key = plan_key(config, inputs, store.traces_identity(config.traces_dir))
    specs = read_plan(out, key)
    targets = None
    if specs is None:
        targets, specs = make_plan(model, tok, table, config, base, progress=progress)
    fingerprints = {s.case_id: store.case_fingerprint(inputs, s) for s in specs}
    scan = store.scan_cases(out, specs, fingerprints, inputs)
    store.report_unusable(out, scan, recompute)  # raises with --no-recompute before anything is written
    if targets is not None:
        write_plan(out, key, targets, specs)
    prov = provenance(device)
    store.set_aside_run_files(out, config.to_json(), inputs, stale=bool(scan.stale))
    atomic_write_json(out / "audit_config.json", {
        "format": CONFIG_FORMAT,
        "config": config.to_json(),
        "identity": {"model_hash": model_hash, "facts_key": table.key_text(), "facts_source": table.source},
        "inputs": inputs,
        "provenance": prov,
        "model_dir": _abs(model_dir),
        "kg_dir": _abs(kg_dir),
        "facts": _abs(table.facts_path),
        "corpus": _corpus_spec(corpus),
        "corpus_info": corpus_record(table, tok),
        "unrelated_pool": pool,
        "case_ids": [s.case_id for s in specs],
        "n_cases": len(specs),
    })
    store.set_aside(out, scan.stale + scan.invalid)
    write_self_corpus(table, out)
    todo = scan.todo
    cache_dir = out / "cache"
    if todo:
        warm_cache(model, tok, table, todo, cache_dir)
    t0 = time.perf_counter()
    bar = _progress(len(specs), len(specs) - len(todo), progress)
    sink = CaseSink(out, fingerprints, bar)
    try:
        if not todo:
            pass
        elif backend == "ray":
            from kdel.audit.ray_backend import run_ray

            del model
            run_ray(model_dir, table, cache_dir, config, todo, workers, device, threads, gpus_per_worker,
                    base.to_arrays(), sink)
        elif workers == 1:
            from kdel.audit.execute import CaseExecutor

            ex = CaseExecutor(model, tok, table, config, base, cache_dir=cache_dir, device=device)
            for s in todo:
                sink(ex.run(s))
        else:
            from kdel.audit.workers import run_local_workers

            del model
            run_local_workers(model_dir, table, cache_dir, config, todo, workers, device, threads,
                              base.to_arrays(), sink)
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    cases = []
    for s in specs:
        d = store.read_case(store.case_path(out, s.case_id))
        if d is None:
            raise RuntimeError(f"case {s.case_id} has no file after the run")
        cases.append(d)
    from kdel.audit.primary import parse_primary

    summary = summarize(cases, seed=config.seed, primary=parse_primary(config.primary))
    summary["timing"]["run_wall_s"] = wall
    summary["timing"]["cases_run"] = len(todo)
    summary["timing"]["workers"] = workers
    summary["timing"]["backend"] = backend
    summary["provenance"] = prov
    atomic_write_json(out / "summary.json", summary)
    return summary


def warm_cache(model, tok, table, specs, cache_dir) -> dict[int, dict]:
    """Key statistics for every layer the cases `specs` read (methods with key statistics: their layers, MEMIT's
    whole window), computed in this process before any case runs, into `cache_dir` (which every worker reads)."""
    from kdel.audit.cases import method_from_spec
    from kdel.delete import DeletionRequest, EditContext
    from kdel.delete.prepare import key_statistics_layers, uses_key_statistics, warm_key_statistics

    ctx = EditContext(model, tok, table)
    layers: set[int] = set()
    for s in specs:
        if uses_key_statistics(s.hparams):
            request = DeletionRequest([table.fact(i) for i in s.fact_ids], s.objective, s.new_targets, s.layer,
                                      s.site, s.seed)
            layers |= key_statistics_layers(method_from_spec(s.method, s.hparams), ctx, [request])
    return warm_key_statistics(ctx.adapter, tok, table, layers, cache_dir) if layers else {}


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
