"""The audit report: plots (plots.py), one self-contained HTML page (html.py), case loading (data.py)."""

from kdel.report.data import AuditData, discover_audits, load_audit, load_cases, read_case_file
from kdel.report.html import ReportResult, load_audits, render_report

__all__ = ["AuditData", "ReportResult", "discover_audits", "load_audit", "load_audits", "load_cases",
           "read_case_file", "render_report"]
