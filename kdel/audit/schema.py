"""The case-file format `kdel-case/1` (one JSON file per deletion case) and its validation.

A case file holds everything a report needs about one deletion: the fact (with popularity and bins), the
spec (what was deleted, how, where), the edit record (‖ΔW‖, ...), success, per-probe-group metrics, global
accuracy, KL on unrelated prompts, Hase et al.'s scores, tracing effect and peak layers, and — under the
keys `timing` and `worker` only — run-dependent fields that "same results" comparisons ignore.
See the README section "Auditing deletions" for the field-by-field description.
"""

from __future__ import annotations

from typing import Any

CASE_FORMAT = "kdel-case/1"
SUMMARY_FORMAT = "kdel-summary/1"
CONFIG_FORMAT = "kdel-audit-config/1"

# Keys whose values depend on the machine/run, not on the model and the case: ignored by "same results".
RUN_DEPENDENT_KEYS = ("timing", "worker")

GROUP_METRIC_KEYS = (
    "n",
    "n_recalled_before",
    "acc_before",
    "acc_after",
    "acc_after_recalled",
    "flip_rate",
    "n_flipped",
    "any_broke",
    "n_gained",
    "mean_logp_before",
    "mean_logp_after",
    "mean_p_before",
    "mean_p_after",
    "mean_p_drop",
    "hase_neighborhood",
)

_TOP_LEVEL: dict[str, type | tuple] = {
    "format": str,
    "case_id": str,
    "status": str,
    "spec": dict,
    "fact": dict,
    "trace": dict,
    "timing": dict,
    "worker": dict,
}
_OK_ONLY: dict[str, type | tuple] = {
    "edit": dict,
    "success": bool,
    "wrecked": bool,
    "efficacy": dict,
    "groups": dict,
    "global": dict,
    "kl": dict,
    "hase": dict,
    "delta_norm": (int, float),
    "revert_verified": bool,
}
_SPEC_KEYS = ("fact_ids", "method", "objective", "layer", "site", "hparams", "seed")
_FACT_KEYS = ("id", "subject", "target", "relation", "subject_degree", "object_degree", "subject_bin", "object_bin")


class CaseSchemaError(ValueError):
    """A case file that does not follow kdel-case/1 (truncated, corrupted, or from another version)."""


def validate_case(d: Any, case_id: str | None = None) -> None:
    """Raise CaseSchemaError unless `d` is a complete kdel-case/1 document (for `case_id`, if given)."""
    if not isinstance(d, dict):
        raise CaseSchemaError("a case file must hold a JSON object")
    if d.get("format") != CASE_FORMAT:
        raise CaseSchemaError(f"format is {d.get('format')!r}, expected {CASE_FORMAT!r}")
    _check_keys(d, _TOP_LEVEL, "")
    if case_id is not None and d["case_id"] != case_id:
        raise CaseSchemaError(f"case_id {d['case_id']!r} does not match the file name {case_id!r}")
    if d["status"] not in ("ok", "error"):
        raise CaseSchemaError(f"status must be 'ok' or 'error', got {d['status']!r}")
    for k in _SPEC_KEYS:
        if k not in d["spec"]:
            raise CaseSchemaError(f"spec lacks {k!r}")
    for k in _FACT_KEYS:
        if k not in d["fact"]:
            raise CaseSchemaError(f"fact lacks {k!r}")
    if d["status"] == "error":
        if not isinstance(d.get("error"), str):
            raise CaseSchemaError("an error case needs an 'error' message")
        return
    _check_keys(d, _OK_ONLY, "")
    for name, g in d["groups"].items():
        if not isinstance(g, dict):
            raise CaseSchemaError(f"groups.{name} must be an object")
        for k in GROUP_METRIC_KEYS:
            if k not in g:
                raise CaseSchemaError(f"groups.{name} lacks {k!r}")
    for k in ("n", "acc_before", "acc_after"):
        if k not in d["global"]:
            raise CaseSchemaError(f"global lacks {k!r}")
    if "success" not in d["efficacy"]:
        raise CaseSchemaError("efficacy lacks 'success'")


def _check_keys(d: dict, spec: dict, where: str) -> None:
    for key, tp in spec.items():
        if key not in d:
            raise CaseSchemaError(f"missing key {where}{key!r}")
        if not isinstance(d[key], tp) or (tp in ((int, float),) and isinstance(d[key], bool)):
            raise CaseSchemaError(f"key {where}{key!r} has the wrong type ({type(d[key]).__name__})")


def result_view(case: dict) -> dict:
    """The case without its run-dependent keys: equal for equal results, whatever the machine or worker."""
    return {k: v for k, v in case.items() if k not in RUN_DEPENDENT_KEYS}
