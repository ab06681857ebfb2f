"""The audit: sample deletion cases, apply each, measure side effects on probe groups, revert, summarise."""

from kdel.audit.cases import AuditConfig, CaseSpec, build_cases, case_id_for, sample_targets
from kdel.audit.runner import run_audit
from kdel.audit.schema import CASE_FORMAT, CaseRecord, CaseSchemaError, result_view, validate_case
from kdel.audit.summary import summarize

__all__ = [
    "CASE_FORMAT",
    "AuditConfig",
    "CaseRecord",
    "CaseSchemaError",
    "CaseSpec",
    "build_cases",
    "case_id_for",
    "result_view",
    "run_audit",
    "sample_targets",
    "summarize",
    "validate_case",
]
