"""Run one case on a loaded model, in named steps: apply the deletion, evaluate it in one batched pass,
revert and verify, then measure (probe groups, global accuracy, KL, efficacy, Hase's scores) and assemble
the `CaseRecord`. With `config.fluency`, generation entropy and held-out perplexity are measured once per
executor before any edit (`FluencyCheck`: identical in every worker) and again per case while the edit is
applied; the case is `wrecked` when unrelated accuracy < 0.9 or fluency is wrecked (`wrecked_by` says which).

A `CaseExecutor` lives in one process (the main one, a local worker or a Ray actor): it loads nothing itself,
holds the model, the base-model scores (computed once per run, in the parent) and the edit context. The
target's p(o) is scored once per case: before the edit by the base scores, after it by the batched pass
(`apply_deletion(score=False)`; the edit record's p_before/p_after are filled from those scores). The revert
is checked: bit-exact equality of the touched tensors, or the whole model's hash with verify_revert="full".
The record's fingerprint is attached by the process that writes the file (runner).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from kdel import __version__
from kdel.audit import measure
from kdel.audit.cases import HASE_WINDOW, AuditConfig, CaseSpec, method_from_spec
from kdel.audit.evaluate import BaseScores, new_target_rows
from kdel.audit.schema import (
    CASE_FORMAT,
    CaseRecord,
    EditSection,
    FactRecord,
    ProvenanceRecord,
    TimingRecord,
    TraceRecord,
    WorkerRecord,
)
from kdel.delete.covariance import SmallCorpusWarning, ThinCorpusWarning
from kdel.delete.layer_auto import uses_site
from kdel.models.scoring import forward_scores


def model_state_hash(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class Applied:
    """A case between its steps: the edit applied to the model, and what the later steps need."""

    spec: CaseSpec
    groups: dict[str, list[int]]
    handle: object  # kdel.delete.EditHandle
    record: object  # kdel.delete.EditRecord (p fields filled by `evaluate`)
    new_enc: list
    new_before: object  # TargetScores of the new target's rows before the edit, or None
    t0: float
    t_edit: float


class CaseExecutor:
    def __init__(self, model, tok, table, config: AuditConfig, base: BaseScores, cache_dir: Path | None,
                 worker_index: int = 0, backend: str = "local", device: str | None = None):
        from kdel.delete import EditContext
        from kdel.provenance import provenance

        self.model, self.tok, self.table, self.config, self.base = model, tok, table, config, base
        # GA/NPO/FT retain sets exclude the unrelated sample (kdel/delete/retain.py)
        self.ctx = EditContext(model, tok, table, cache_dir=cache_dir, unrelated_pool=list(base.unrelated_pool))
        self.worker = WorkerRecord(index=worker_index, pid=os.getpid(), host=socket.gethostname(), backend=backend)
        device = device or str(next(model.parameters()).device)
        self.provenance = ProvenanceRecord.from_json(provenance(device))
        self.full_verify = config.verify_revert == "full"
        self.base_hash = model_state_hash(model) if self.full_verify else None
        self._methods: dict[tuple, object] = {}
        self.fluency = measure.fluency_check(model, tok, table) if config.fluency else None

    def method(self, spec: CaseSpec):
        """The spec's method with the spec's (resolved) hyperparameters, built once per process."""
        from kdel.io import dumps_json

        key = (spec.method, dumps_json(spec.hparams))
        if key not in self._methods:
            self._methods[key] = method_from_spec(spec.method, spec.hparams)
        return self._methods[key]

    # -- one case: the steps in order -----------------------------------------------------------------
    def run(self, spec: CaseSpec, attempt: int = 1) -> CaseRecord:
        t0 = time.perf_counter()
        try:
            applied = self.apply(spec, t0)
        except Exception as e:  # noqa: BLE001 - a method that fails on a case is a result, not a crash
            self.verify(None)
            return self.assemble_error(spec, e, t0, attempt)
        try:
            cs, t_eval = self.evaluate(applied)
            fluency = self.fluency.after(self.model) if self.fluency is not None else None
            t_fluency = time.perf_counter()
        finally:
            revert_ok = self.revert(applied)
        fid = spec.fact_ids[0]
        groups = measure.group_sections(cs, fid, applied.groups)
        tp = measure.TargetPairs.of(cs, fid)
        efficacy = measure.efficacy_section(spec.objective, spec.new_targets[0] if spec.new_targets else None, tp)
        hase = measure.hase_section(spec.objective, tp, cs, applied.groups, spec.tracing_effect)
        rec = self._skeleton(spec, "ok", attempt)
        edit = applied.record.to_json()
        edit_seconds = edit.pop("seconds", None)
        cache_hits = _pop_run_dependent(edit.get("info"))
        if not uses_site(self.method(spec)):
            edit["site"] = None  # the method ignores the edit site
        rec.edit = EditSection.from_json(edit, "edit")
        rec.delta_norm = float(applied.record.total_delta_norm)
        rec.success = efficacy.success
        rec.fluency = measure.fluency_section(fluency) if fluency is not None else None
        rec.wrecked, rec.wrecked_by = measure.wrecked_verdict(groups, rec.fluency)
        rec.efficacy = efficacy
        rec.groups = groups
        rec.global_ = measure.global_section(cs, set(spec.fact_ids))
        rec.kl = measure.kl_section(cs, applied.groups["unrelated"])
        rec.hase = hase
        rec.revert_verified = revert_ok
        rec.probes = measure.probe_outcomes(cs, set(spec.fact_ids))
        rec.timing = TimingRecord(edit_s=edit_seconds, apply_s=applied.t_edit - t0, eval_s=t_eval - applied.t_edit,
                                  total_s=time.perf_counter() - t0, n_rows_after=len(cs.after),
                                  cov_cache=cache_hits or None,
                                  fluency_s=t_fluency - t_eval if fluency is not None else None)
        return rec

    def apply(self, spec: CaseSpec, t0: float) -> Applied:
        """Score the new target's prompts on the unedited model (rewriting objectives), then apply the edit."""
        from kdel.delete import DeletionRequest, apply_deletion
        from kdel.delete.objectives import REWRITING

        facts = [self.table.fact(i) for i in spec.fact_ids]
        fact = facts[0]
        rewriting = spec.objective in REWRITING and spec.new_targets
        new_enc = new_target_rows(self.tok, fact, spec.new_targets[0]) if rewriting else []
        new_before = forward_scores(self.model, new_enc, self.base.pad_id)[0] if new_enc else None
        request = DeletionRequest(facts=facts, objective=spec.objective, new_targets=spec.new_targets,
                                  layer=spec.layer, site=spec.site, seed=spec.seed)
        with warnings.catch_warnings():  # the parent judged the corpus once, when it warmed the key statistics
            warnings.simplefilter("ignore", ThinCorpusWarning)
            warnings.simplefilter("ignore", SmallCorpusWarning)
            handle, record = apply_deletion(self.method(spec), self.ctx, request, score=False)
        groups = self.table.probe_groups(fact.id, self.base.unrelated_pool)
        return Applied(spec, groups, handle, record, new_enc, new_before, t0, time.perf_counter())

    def evaluate(self, a: Applied) -> tuple[measure.CaseScores, float]:
        """ONE batched pass with the edit applied over the union of the case's prompts (+ the new target's),
        with the unrelated prompts' next-token distributions from the same logits."""
        base = self.base
        fid = a.spec.fact_ids[0]
        union, pos = measure.union_rows(base, fid)
        dist_rows = [pos[base.rows.canonical[i]] for i in a.groups["unrelated"]]
        enc = [base.rows.encoded[r] for r in union] + a.new_enc
        after, dists = forward_scores(self.model, enc, base.pad_id, dist_rows)
        cs = measure.CaseScores(base, after, dists, pos, len(union), a.new_before)
        # the edit record's target probabilities, from these scores (canonical prompt of each fact)
        canon = [base.rows.canonical[i] for i in a.spec.fact_ids]
        before_t, after_t = cs.pair(canon)
        a.record.p_before = [float(p) for p in before_t.prob]
        a.record.p_after = [float(p) for p in after_t.prob]
        if a.new_enc:
            a.record.new_target_p_before = [float(a.new_before.prob[0])]
            a.record.new_target_p_after = [float(after.prob[len(union)])]
        return cs, time.perf_counter()

    def revert(self, a: Applied) -> bool:
        a.handle.revert()
        return self.verify(a.handle)

    def verify(self, handle) -> bool:
        """The model is back to its base weights (raises: continuing on a modified model would be wrong)."""
        if handle is not None:
            for name, orig in handle.originals.items():
                if not torch.equal(self.model.get_parameter(name), orig):
                    raise RuntimeError(f"revert failed: {name} differs from its snapshot")
        if self.full_verify and model_state_hash(self.model) != self.base_hash:
            raise RuntimeError("revert failed: the model's weights hash differs from the base model's")
        return True

    # -- assembling the record ------------------------------------------------------------------------
    def assemble_error(self, spec: CaseSpec, e: Exception, t0: float, attempt: int) -> CaseRecord:
        rec = self._skeleton(spec, "error", attempt)
        rec.error = f"{type(e).__name__}: {' '.join(str(e).split())}"
        rec.timing = TimingRecord(total_s=time.perf_counter() - t0)
        return rec

    def _skeleton(self, spec: CaseSpec, status: str, attempt: int) -> CaseRecord:
        f = self.table.fact(spec.fact_ids[0])
        worker = dataclasses.replace(self.worker, attempt=attempt)
        return CaseRecord(
            format=CASE_FORMAT,
            kdel_version=__version__,
            case_id=spec.case_id,
            status=status,
            spec=spec.spec_record(),
            fact=FactRecord(id=f.id, subject=f.subject, target=f.target, relation=f.relation, prompt=f.prompt,
                            subject_degree=f.subject_popularity, object_degree=f.object_popularity,
                            subject_bin=spec.subject_bin, object_bin=spec.object_bin, n_bins=self.config.n_bins,
                            stratify=self.config.stratify),
            trace=TraceRecord(peak_layers=dict(spec.peak_layers), tracing_effect=spec.tracing_effect,
                              tracing_window=HASE_WINDOW, layer_source=spec.layer_source,
                              layer_choice=spec.layer_choice),
            timing=TimingRecord(),
            worker=worker,
            provenance=self.provenance,
        )


# -- building an executor in a fresh process (local worker, Ray actor) --------------------------------
def method_modules(config: AuditConfig) -> list[str]:
    """Modules defining the configured methods, imported by each worker so its registry has them."""
    from kdel.delete import get_method

    mods = []
    for m in config.methods:
        mod = type(get_method(m)).__module__
        if mod != "__main__" and mod not in mods:
            mods.append(mod)
    return mods


def setup_executor(model_dir, table, config: AuditConfig, cache_dir, device: str, threads: int | None, index: int,
                   backend: str, modules: list[str], base_arrays: dict):
    """Load the model in this process and return a ready CaseExecutor on the parent's base scores."""
    from kdel.models.loading import load_model_for_table
    from kdel.runtime import install_warning_handler, set_threads

    install_warning_handler()  # a worker's warnings are one `kdel: warning:` line too
    set_threads(threads)
    try:  # one weight-loading bar per worker would drown the parent's case progress bar
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    for mod in modules:
        importlib.import_module(mod)
    model, tok = load_model_for_table(model_dir, table, device)
    base = BaseScores.from_arrays(tok, table, base_arrays)
    return CaseExecutor(model, tok, table, config, base, cache_dir=Path(cache_dir), worker_index=index,
                        backend=backend, device=device)


RUN_DEPENDENT_INFO_KEYS = ("cov_cache",)  # whether key statistics came from memory, disk or a fresh pass


def _pop_run_dependent(info) -> list:
    """Remove the run-dependent keys from a method's info (at any depth) and return their values in order:
    they depend on what this process or OUT/cache had already computed, not on the case."""
    found: list = []

    def walk(x):
        if isinstance(x, dict):
            for k in RUN_DEPENDENT_INFO_KEYS:
                if k in x:
                    found.append(x.pop(k))
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(info)
    return found

