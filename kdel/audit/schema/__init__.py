"""The audit's file formats: case files (`kdel-case/1`, typed records in records.py), and the format names
of audit_config.json, plan.json and summary.json.

`validate_case(d, case_id)` checks a parsed case file against `CaseRecord` (and its file name);
`result_view(d)` is what "same results" compares: the case without run-dependent keys (timing, worker,
provenance) and without the fingerprint of its inputs.
"""

from __future__ import annotations

from typing import Any

from kdel.audit.schema import records as _records
from kdel.audit.schema.records import *  # noqa: F403  re-exports the typed records (records.__all__)
from kdel.audit.schema.records import CASE_FORMAT, CASE_FORMATS, CaseRecord
from kdel.audit.schema.typed import CaseSchemaError

SUMMARY_FORMAT = "kdel-summary/1"
CONFIG_FORMAT = "kdel-audit-config/1"
PLAN_FORMAT = "kdel-audit-plan/2"

# Keys whose values depend on the machine/run, not on the model and the case: ignored by "same results".
RUN_DEPENDENT_KEYS = ("timing", "worker", "provenance")
# The fingerprint describes the inputs (model, facts, settings), not the result.
INPUT_KEYS = ("fingerprint",)


def validate_case(d: Any, case_id: str | None = None) -> CaseRecord:
    """The `CaseRecord` of a parsed case file; CaseSchemaError unless it is a complete case (for `case_id`)."""
    if not isinstance(d, dict):
        raise CaseSchemaError("a case file must hold a JSON object")
    if d.get("format") not in CASE_FORMATS:  # checked first: another version's keys would only confuse
        raise CaseSchemaError(f"format is {d.get('format')!r}, expected {CASE_FORMAT!r}")
    rec = CaseRecord.from_json(d)
    if case_id is not None and rec.case_id != case_id:
        raise CaseSchemaError(f"case_id {rec.case_id!r} does not match the file name {case_id!r}")
    return rec


def result_view(case: dict) -> dict:
    """The case without its run-dependent keys and its input fingerprint: equal for equal results."""
    return {k: v for k, v in case.items() if k not in RUN_DEPENDENT_KEYS and k not in INPUT_KEYS}


__all__ = [*_records.__all__, "CONFIG_FORMAT", "INPUT_KEYS", "PLAN_FORMAT", "RUN_DEPENDENT_KEYS", "SUMMARY_FORMAT",
           "result_view", "validate_case"]
