"""The case file `kdel-case/1` as typed records: one definition used by the writer, the validator and readers.

`CaseRecord.from_json(d)` validates a parsed case file (types and required keys come from the annotations
below; see typed.py) and `record.to_json()` gives back the same dict. Fields with a default may be absent
from older or hand-made files; kdel writes every field. docs/audit.md describes each field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdel.audit.schema.typed import CaseSchemaError, from_json, opt, to_json

CASE_FORMAT = "kdel-case/1"
CASE_FORMATS = (CASE_FORMAT,)  # formats this version reads
STATUSES = ("ok", "error")


class _Record:
    """JSON conversion for every record below."""

    @classmethod
    def from_json(cls, d: Any, where: str = ""):
        return from_json(cls, d, where)

    def to_json(self) -> dict:
        return to_json(self)


@dataclass
class SpecRecord(_Record):
    """What was deleted, how and where (the case id hashes the first seven fields)."""

    fact_ids: list[int]
    method: str
    objective: str
    layer: int
    site: str
    hparams: dict[str, Any]  # resolved: every hyperparameter, defaults included
    seed: int
    new_targets: list[str] | None = None  # rewriting objectives
    layer_source: str = "list"  # auto | all | list


@dataclass
class FactRecord(_Record):
    id: int
    subject: str
    target: str
    relation: str | None
    subject_degree: float
    object_degree: float
    subject_bin: int
    object_bin: int
    prompt: str | None = None
    n_bins: int | None = None
    stratify: str | None = None


@dataclass
class TraceRecord(_Record):
    peak_layers: dict[str, int | None]  # site -> layer chosen from the trace at that site (null unless traced)
    tracing_effect: float | None  # Hase et al.'s, at spec.layer
    tracing_window: int  # Hase et al.'s window (5)
    layer_source: str
    # layers=auto: the evidence for spec.layer (kdel.delete.layer_auto.site_pick): layer, effect, runner-up,
    # window, excluded layers, fallback and its reason, the site and layer the choice preferred
    layer_choice: dict[str, Any] | None = opt()


@dataclass
class EditSection(_Record):
    """The method's EditRecord minus its run-dependent `seconds` (and cache hits, moved to timing)."""

    method: str
    delta_norms: dict[str, float]
    total_delta_norm: float
    objective: str | None = None
    fact_ids: list[int] | None = None
    layers: list[int] | None = None
    site: str | None = None
    hparams: dict[str, Any] | None = None
    p_before: list[float] | None = None  # p(o) of each fact, canonical prompt, unedited model
    p_after: list[float] | None = None  # the same with the edit applied
    new_target_p_before: list[float] | None = None
    new_target_p_after: list[float] | None = None
    info: dict[str, Any] | None = None  # method-specific: C's token count and condition number, losses, ...


@dataclass
class EfficacyRecord(_Record):
    objective: str
    success: bool
    target_prompts_success_rate: float | None
    target_recall_after: float | None
    target_recall_before: float | None
    target_p_before: float
    target_p_after: float
    target_rank_after: int
    paraphrase_recall_before: float | None
    paraphrase_recall_after: float | None
    paraphrase_success_rate: float | None
    target_logprob_after: float | None = None
    target_first_token_recalled_after: bool | None = None
    new_target: str | None = None
    new_target_recall_after: bool | None = None
    new_target_p_before: float | None = None
    new_target_p_after: float | None = None


@dataclass
class GroupRecord(_Record):
    """One probe group's metrics (rows aligned before/after; rates among facts recalled before)."""

    n: int
    n_recalled_before: int
    acc_before: float | None
    acc_after: float | None
    acc_after_recalled: float | None
    flip_rate: float | None
    n_flipped: int
    any_broke: bool | None
    n_gained: int
    mean_logp_before: float | None
    mean_logp_after: float | None
    mean_p_before: float | None
    mean_p_after: float | None
    mean_p_drop: float | None
    hase_neighborhood: float | None


GROUP_METRIC_KEYS = tuple(GroupRecord.__dataclass_fields__)


@dataclass
class GlobalRecord(_Record):
    n: int
    acc_before: float | None
    acc_after: float | None
    acc_drop: float | None
    n_flipped_excluding_target: int
    flip_rate_excluding_target: float | None
    mean_p_drop_excluding_target: float | None


@dataclass
class ProbeOutcomes(_Record):
    """Per fact other than the deleted ones that the model recalled before the edit (canonical prompt): its
    outcome after the edit. The labels a risk predictor learns from (kdel.risk); aligned lists."""

    fact_ids: list[int]
    p_before: list[float]
    p_after: list[float]
    recalled_after: list[bool]


@dataclass
class KLRecord(_Record):
    n: int
    mean: float | None
    max: float | None


@dataclass
class HaseRecord(_Record):
    kind: str  # erasure | rewrite
    efficacy_score: float | None
    paraphrase_score: float | None
    neighborhood_score: float | None
    neighborhood_groups: list[str]
    tracing_effect: float | None


@dataclass
class FluencyRecord(_Record):
    """Generation entropy and held-out perplexity before and after the edit (kdel.models.fluency)."""

    entropy_before: float | None  # mean weighted bigram/trigram entropy of greedy generations, bits
    entropy_after: float | None
    entropy_drop: float | None  # (before - after) / before
    perplexity_before: float | None  # on the corpus' held-out lines (null without held-out text)
    perplexity_after: float | None
    perplexity_ratio: float | None  # after / before
    perplexity_tokens: int  # predicted held-out tokens
    wrecked: bool  # perplexity ratio > max_ppl_ratio or entropy drop > max_entropy_drop
    wrecked_by: list[str]  # "perplexity", "entropy"
    max_ppl_ratio: float
    max_entropy_drop: float
    texts_after: list[str] | None = None  # the first generations after the edit (prompt + continuation)


@dataclass
class TimingRecord(_Record):
    """Run-dependent: seconds, and where key statistics came from (memory, disk or a fresh pass)."""

    edit_s: float | None = opt()
    apply_s: float | None = opt()
    eval_s: float | None = opt()
    total_s: float | None = opt()
    n_rows_after: int | None = opt()
    cov_cache: list[Any] | None = opt()
    fluency_s: float | None = opt()


@dataclass
class WorkerRecord(_Record):
    """Run-dependent: which process computed the case."""

    index: int
    pid: int
    host: str
    backend: str  # local | ray
    attempt: int | None = opt()  # 1, or 2.. when a Ray actor died and the case was retried on a new one


@dataclass
class FingerprintRecord(_Record):
    """A hash of everything that decides the case's result, and those inputs (store.case_fingerprint)."""

    hash: str
    inputs: dict[str, Any]


@dataclass
class ProvenanceRecord(_Record):
    """Code version and environment of the process that computed the case (kdel.provenance)."""

    kdel_version: str
    git_commit: str | None = None
    git_dirty: bool | None = None
    code_hash: str | None = None
    python: str | None = None
    torch: str | None = None
    transformers: str | None = None
    numpy: str | None = None
    scipy: str | None = None
    sklearn: str | None = None
    platform: str | None = None
    cpu: str | None = None
    gpu: str | None = None
    torch_threads: int | None = None
    device: str | None = None


_OK_FIELDS = ("edit", "delta_norm", "success", "wrecked", "efficacy", "groups", "global_", "kl", "hase",
              "revert_verified")


@dataclass
class CaseRecord(_Record):
    """One deletion case. Status "ok": every result field is set; "error": `error` holds the method's message."""

    format: str
    case_id: str
    status: str
    spec: SpecRecord
    fact: FactRecord
    trace: TraceRecord
    timing: TimingRecord
    worker: WorkerRecord
    kdel_version: str | None = None
    fingerprint: FingerprintRecord | None = opt()  # written by kdel; a file without one is recomputed on resume
    provenance: ProvenanceRecord | None = opt()
    error: str | None = opt()
    edit: EditSection | None = opt()
    delta_norm: float | None = opt()  # ||ΔW||_F over all touched matrices
    success: bool | None = opt()
    wrecked: bool | None = opt()  # unrelated accuracy < 0.9, or fluency wrecked (when measured)
    wrecked_by: list[str] | None = opt()  # which fired: "unrelated_accuracy", "perplexity", "entropy"
    efficacy: EfficacyRecord | None = opt()
    groups: dict[str, GroupRecord] | None = opt()
    global_: GlobalRecord | None = opt(key="global")
    kl: KLRecord | None = opt()
    hase: HaseRecord | None = opt()
    revert_verified: bool | None = opt()
    fluency: FluencyRecord | None = opt()  # when the audit measures fluency (--fluency)
    probes: ProbeOutcomes | None = opt()  # per-fact outcomes (absent from cases written before kdel recorded them)

    def check(self) -> None:
        if self.format not in CASE_FORMATS:
            raise CaseSchemaError(f"format is {self.format!r}, expected {CASE_FORMAT!r}")
        if self.status not in STATUSES:
            raise CaseSchemaError(f"status must be 'ok' or 'error', got {self.status!r}")
        if self.status == "error":
            if self.error is None:
                raise CaseSchemaError("an error case needs an 'error' message")
            return
        for name in _OK_FIELDS:
            if getattr(self, name) is None:
                raise CaseSchemaError(f"missing key {name.rstrip('_')!r} (required when status is 'ok')")


__all__ = [
    "CASE_FORMAT",
    "CASE_FORMATS",
    "GROUP_METRIC_KEYS",
    "CaseRecord",
    "CaseSchemaError",
    "EditSection",
    "EfficacyRecord",
    "FactRecord",
    "FingerprintRecord",
    "FluencyRecord",
    "GlobalRecord",
    "GroupRecord",
    "HaseRecord",
    "KLRecord",
    "ProbeOutcomes",
    "ProvenanceRecord",
    "SpecRecord",
    "TimingRecord",
    "TraceRecord",
    "WorkerRecord",
]
