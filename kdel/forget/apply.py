"""Apply the deletion of a set of facts as one batch or one fact after another, and track ||ΣΔW||.

The method decides (`mode_for`):
  * **sequential** for the rank-one methods (rome, r-rome): one rank-one update maps one key to one value, so
    every fact gets its own update, computed on the model as the previous updates left it (ROME's own
    multi-fact edit does the same; a step per fact also gives one ||ΔW|| per fact);
  * **batch** for every other method: MEMIT (and AlphaEdit) solve for all keys at once by design, and the
    gradient methods (ft, ga, npo, rmu, simnpo) optimise one loss over every training prompt of every fact.
`mode="batch"` / `"sequential"` overrides the choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kdel.errors import UserError

SEQUENTIAL_METHODS = ("rome", "r-rome")
MODES = ("auto", "batch", "sequential")


def mode_for(method_name: str, mode: str = "auto") -> str:
    if mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    return "sequential" if method_name in SEQUENTIAL_METHODS else "batch"


def mode_reason(method_name: str, mode: str) -> str:
    if mode == "sequential":
        return (f"{method_name}: one rank-one update per fact, each on the model the previous ones left"
                if method_name in SEQUENTIAL_METHODS else "sequential: asked for")
    if method_name in SEQUENTIAL_METHODS:
        return "batch: asked for"
    return f"{method_name}: one update for all facts at once (the method optimises them jointly)"


class CumulativeDelta:
    """The first snapshot of every parameter any step touched, so ||ΣΔW|| = ||W_now − W_0|| is exact."""

    def __init__(self, model):
        self.model = model
        self.originals: dict[str, torch.Tensor] = {}

    def add(self, handle) -> None:
        for name, orig in handle.originals.items():
            self.originals.setdefault(name, orig)

    @torch.no_grad()
    def norms(self) -> dict[str, float]:
        return {n: float((self.model.get_parameter(n).double() - o.double()).norm())
                for n, o in self.originals.items()}

    def total(self) -> float:
        return float(sum(v * v for v in self.norms().values()) ** 0.5)


@dataclass
class ForgetEdit:
    handle: object  # reverts every step (kdel.delete.sequential.SequentialHandle)
    records: list = field(default_factory=list)  # one kdel.delete.EditRecord per step
    mode: str = "batch"
    cumulative: CumulativeDelta | None = None

    def steps_json(self) -> list[dict]:
        out = []
        for i, r in enumerate(self.records):
            d = r.to_json()
            out.append({"step": i, "fact_ids": d["fact_ids"], "layers": d["layers"], "site": d["site"],
                        "delta_norms": d["delta_norms"], "total_delta_norm": d["total_delta_norm"],
                        "seconds": d["seconds"], "info": d["info"]})
        return out


def apply_forget(method, ctx, facts, objective: str = "erase", new_targets=None, layer: int | None = None,
                 site: str = "last", seed: int = 0, mode: str = "auto") -> ForgetEdit:
    """Delete `facts` from `ctx.model` in place; the returned edit's handle reverts all of it bit for bit.

    A failing step reverts the steps before it and raises (applied whole or not at all)."""
    from kdel.delete import DeletionRequest, apply_deletion
    from kdel.delete.sequential import SequentialHandle

    mode = mode_for(method.name, mode)
    cumulative = CumulativeDelta(ctx.model)
    if mode == "batch":
        request = DeletionRequest(list(facts), objective, new_targets, layer, site, seed)
        handle, record = apply_deletion(method, ctx, request, score=False)
        cumulative.add(handle)
        return ForgetEdit(SequentialHandle([handle]), [record], mode, cumulative)
    handles, records = [], []
    try:
        for i, fact in enumerate(facts):
            targets = [new_targets[i]] if new_targets else None
            request = DeletionRequest([fact], objective, targets, layer, site, seed)
            handle, record = apply_deletion(method, ctx, request, score=False)
            handles.append(handle)
            cumulative.add(handle)
            records.append(record)
    except BaseException:
        SequentialHandle(handles).revert()
        raise
    return ForgetEdit(SequentialHandle(handles), records, mode, cumulative)
