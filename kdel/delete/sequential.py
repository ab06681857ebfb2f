"""Sequential deletion: requests applied one after another without reverting in between.

Each step sees the model edited by the steps before it (as in sequential-editing studies); the returned
handle reverts every step, in reverse order, so the model gets its original weights back bit for bit.
If a step fails (e.g. a refused non-finite update), the steps already applied are reverted and the error
is raised: a sequential deletion is applied whole or not at all.

Each step's record carries its efficacy right after that step; `handle.final_efficacy` is the efficacy of
every fact on the model after the last step (later edits can undo earlier ones), measured against the
model before the first step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from kdel.delete.base import (
    DeletionMethod,
    DeletionRequest,
    EditContext,
    EditHandle,
    EditRecord,
    apply_deletion,
    resolve_targets,
)
from kdel.delete.efficacy import EfficacyProbe, FactEfficacy


class SequentialHandle:
    """Reverts a list of edit handles in reverse order. Idempotent."""

    def __init__(self, handles: list[EditHandle], final_efficacy: list[FactEfficacy] | None = None):
        self.handles = handles
        self.final_efficacy = final_efficacy or []

    @property
    def reverted(self) -> bool:
        return all(h.reverted for h in self.handles)

    @property
    def originals(self) -> dict:
        """The snapshot of every touched parameter before the first step."""
        out: dict = {}
        for h in reversed(self.handles):
            out.update(h.originals)
        return out

    def revert(self) -> None:
        for h in reversed(self.handles):
            h.revert()

    def verify(self, mode: str = "touched", base_hash: str | None = None) -> bool:
        for h in self.handles:
            h.verify("touched" if mode == "full" else mode)
        if mode == "full" and self.handles:
            self.handles[0].verify("full", base_hash)
        return True


def apply_sequential(
    method: DeletionMethod, ctx: EditContext, requests: Sequence[DeletionRequest], verify: str = "touched"
) -> tuple[SequentialHandle, list[EditRecord]]:
    """Apply each request in turn; return one handle that reverts them all and the per-step records."""
    resolved = [resolve_targets(ctx, r)[0] for r in requests]
    probes = [EfficacyProbe(ctx, r, r.new_targets, r.noise_settings) for r in resolved]
    before = [p.score() for p in probes]
    handles: list[EditHandle] = []
    records: list[EditRecord] = []
    try:
        for request in resolved:
            handle, record = apply_deletion(method, ctx, request, verify if not handles else "touched")
            handles.append(handle)
            records.append(record)
    except BaseException:
        SequentialHandle(handles).revert()
        raise
    final = [e for p, b in zip(probes, before) for e in p.outcomes(b, p.score())]
    return SequentialHandle(handles, final), records


def split_request(request: DeletionRequest) -> list[DeletionRequest]:
    """One single-fact request per fact of a batch request (same objective, layer, site, seed and noise)."""
    out = []
    for i, fact in enumerate(request.facts):
        out.append(dataclasses.replace(
            request,
            facts=[fact],
            new_targets=[request.new_targets[i]] if request.new_targets else None,
            target_sources=[request.target_sources[i]] if request.target_sources else None,
        ))
    return out
