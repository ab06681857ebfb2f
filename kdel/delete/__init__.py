"""Deletion methods behind one interface (base.py) and a registry; one sub-package per method."""

from kdel.delete.base import (
    DeletionMethod,
    DeletionRequest,
    EditContext,
    EditHandle,
    EditRecord,
    apply_deletion,
    get_method,
    list_methods,
    register_method,
)

__all__ = [
    "DeletionMethod",
    "DeletionRequest",
    "EditContext",
    "EditHandle",
    "EditRecord",
    "apply_deletion",
    "get_method",
    "list_methods",
    "register_method",
]
