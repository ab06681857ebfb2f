"""Sequential deletion: requests applied one after another without reverting in between.

Each step sees the model edited by the steps before it (as in sequential-editing studies); the returned
handle reverts every step, in reverse order, so the model gets its original weights back bit for bit.
If a step fails (e.g. a refused non-finite update), the steps already applied are reverted and the error
is raised: a sequential deletion is applied whole or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from kdel.delete.base import DeletionMethod, DeletionRequest, EditContext, EditHandle, EditRecord, apply_deletion


class SequentialHandle:
    """Reverts a list of edit handles in reverse order. Idempotent."""

    def __init__(self, handles: list[EditHandle]):
        self.handles = handles

    @property
    def reverted(self) -> bool:
        return all(h.reverted for h in self.handles)

    def revert(self) -> None:
        for h in reversed(self.handles):
            h.revert()


def apply_sequential(
    method: DeletionMethod, ctx: EditContext, requests: Sequence[DeletionRequest]
) -> tuple[SequentialHandle, list[EditRecord]]:
    """Apply each request in turn; return one handle that reverts them all and the per-step records."""
    handles: list[EditHandle] = []
    records: list[EditRecord] = []
    try:
        for request in requests:
            handle, record = apply_deletion(method, ctx, request)
            handles.append(handle)
            records.append(record)
    except BaseException:
        SequentialHandle(handles).revert()
        raise
    return SequentialHandle(handles), records


def split_request(request: DeletionRequest) -> list[DeletionRequest]:
    """One single-fact request per fact of a batch request (same objective, layer, site and seed)."""
    out = []
    for i, fact in enumerate(request.facts):
        targets = [request.new_targets[i]] if request.new_targets else None
        out.append(DeletionRequest([fact], request.objective, targets, request.layer, request.site, request.seed))
    return out
