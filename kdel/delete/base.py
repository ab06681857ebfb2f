"""The deletion interface: a method edits weights in place; the framework makes every edit reversible.

`apply_deletion(method, ctx, request)`:
  1. asks the method which parameters it will touch, and snapshots them;
  2. lets the method edit them in place (`method.edit`);
  3. refuses (and reverts) an update that is not finite;
  4. records ||ΔW||_F of each touched matrix, the target probabilities before/after (scored on the model
     with the weights applied, never under an optimisation hook) and seconds;
  5. returns an `EditHandle` whose `revert()` restores the original weights bit for bit.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from kdel.errors import UserError
from kdel.facts import Fact, FactTable
from kdel.models.adapter import ModelAdapter
from kdel.models.scoring import score_targets

SITES = ("subject_last", "last")


@dataclass
class DeletionRequest:
    """What to delete: one or several facts (a batch), the objective, and where to edit."""

    facts: list[Fact]
    objective: str = "erase"
    new_targets: list[str] | None = None  # per fact, for objectives that rewrite (replace, unknown, ...)
    layer: int | None = None  # central/only layer for locate-then-edit methods; None = the method's default
    site: str = "subject_last"  # 'subject_last' (key at the last subject token) or 'last' (last prompt token)
    seed: int = 0

    def __post_init__(self):
        if not self.facts:
            raise UserError("no facts to delete")
        if self.site not in SITES:
            raise UserError(f"unknown edit site {self.site!r}: use {' or '.join(SITES)}")


@dataclass
class EditContext:
    """Everything a method may use: the model (edited in place), its tokenizer and adapter, the facts."""

    model: torch.nn.Module
    tokenizer: Any
    table: FactTable
    cache_dir: Path | None = None  # where key statistics are cached (None = no disk cache)
    adapter: ModelAdapter | None = None
    unrelated_pool: list[int] | None = None  # the audit's fixed `unrelated` sample: retain sets must avoid it

    def __post_init__(self):
        if self.adapter is None:
            self.adapter = ModelAdapter(self.model, self.tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


@dataclass
class EditRecord:
    method: str
    objective: str
    fact_ids: list[int]
    layers: list[int]
    site: str
    hparams: dict
    delta_norms: dict[str, float]  # parameter name -> ||ΔW||_F
    p_before: list[float]  # p(true object) of each fact, canonical prompt, before
    p_after: list[float]
    new_target_p_before: list[float] | None
    new_target_p_after: list[float] | None
    seconds: float
    info: dict = field(default_factory=dict)  # method-specific: C token count, condition number, losses...

    @property
    def total_delta_norm(self) -> float:
        return float(sum(v**2 for v in self.delta_norms.values()) ** 0.5)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["total_delta_norm"] = self.total_delta_norm
        return d


class EditHandle:
    """Restores the snapshotted parameters bit for bit. Idempotent."""

    def __init__(self, model: torch.nn.Module, originals: dict[str, torch.Tensor]):
        self.model = model
        self.originals = originals
        self.reverted = False

    @torch.no_grad()
    def revert(self) -> None:
        if self.reverted:
            return
        for name, value in self.originals.items():
            self.model.get_parameter(name).copy_(value)
        self.reverted = True


class DeletionMethod(ABC):
    """A deletion/editing method. Subclasses set `name` and `hparams_class` and implement two methods."""

    name: ClassVar[str]
    hparams_class: ClassVar[type]
    # Objectives this method supports (the framework rejects others with a clear message).
    objectives: ClassVar[tuple[str, ...]] = ("erase", "replace", "unknown")

    def __init__(self, hparams=None):
        self.hparams = hparams if hparams is not None else self.hparams_class()
        validate = getattr(self.hparams, "validate", None)
        if callable(validate):
            validate()  # bad values are a UserError, whoever built the hyperparameters

    @abstractmethod
    def parameters_to_edit(self, ctx: EditContext, request: DeletionRequest) -> list[str]:
        """Names (model.get_parameter) of every parameter `edit` may change."""

    @abstractmethod
    def edit(self, ctx: EditContext, request: DeletionRequest) -> dict:
        """Change those parameters in place. Returns method-specific info for the record (JSON-able)."""

    def layers_of(self, ctx: EditContext, request: DeletionRequest) -> list[int]:
        return [] if request.layer is None else [request.layer]


_REGISTRY: dict[str, type[DeletionMethod]] = {}


def register_method(cls: type[DeletionMethod]) -> type[DeletionMethod]:
    """Class decorator: make a method available by its `name`."""
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin_methods() -> None:
    import importlib
    import pkgutil

    import kdel.delete as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.ispkg:
            importlib.import_module(f"kdel.delete.{info.name}")


def list_methods() -> list[str]:
    _load_builtin_methods()
    return sorted(_REGISTRY)


def get_method(name: str, hparams=None) -> DeletionMethod:
    _load_builtin_methods()
    if name not in _REGISTRY:
        raise UserError(f"unknown method {name!r}: choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](hparams)


def _target_probs(ctx: EditContext, facts: list[Fact], targets: list[str]) -> list[float]:
    scores = score_targets(ctx.model, ctx.tokenizer, [f.prompt for f in facts], targets)
    return [float(p) for p in scores.prob]


def apply_deletion(method: DeletionMethod, ctx: EditContext, request: DeletionRequest, *,
                   score: bool = True) -> tuple[EditHandle, EditRecord]:
    """Apply `method` to `ctx.model` in place; return the revert handle and the record.

    `score=False` leaves the record's p_before/p_after fields None, for a caller that scores the targets in its
    own batched pass (the audit), so a case scores its target once."""
    if request.objective not in method.objectives:
        raise UserError(
            f"method {method.name!r} does not support objective {request.objective!r} "
            f"(it supports {', '.join(method.objectives)})"
        )
    if request.layer is not None:
        ctx.adapter._check_layer(request.layer)
    facts = request.facts
    true_targets = [f.target for f in facts]
    p_before = _target_probs(ctx, facts, true_targets) if score else None
    new_before = _target_probs(ctx, facts, request.new_targets) if score and request.new_targets else None

    names = method.parameters_to_edit(ctx, request)
    originals = {n: ctx.model.get_parameter(n).detach().clone() for n in names}
    handle = EditHandle(ctx.model, originals)
    start = time.perf_counter()
    try:
        info = method.edit(ctx, request) or {}
    except BaseException:
        handle.revert()
        raise
    seconds = time.perf_counter() - start

    deltas = {}
    with torch.no_grad():
        for n, orig in originals.items():
            cur = ctx.model.get_parameter(n)
            if not torch.isfinite(cur).all():
                handle.revert()
                raise UserError(f"{method.name} produced a non-finite update of {n}; it was refused, not applied")
            deltas[n] = float((cur.double() - orig.double()).norm())

    record = EditRecord(
        method=method.name,
        objective=request.objective,
        fact_ids=[f.id for f in facts],
        layers=method.layers_of(ctx, request),
        site=request.site,
        hparams=dataclasses.asdict(method.hparams) if dataclasses.is_dataclass(method.hparams) else {},
        delta_norms=deltas,
        p_before=p_before,
        p_after=_target_probs(ctx, facts, true_targets) if score else None,
        new_target_p_before=new_before,
        new_target_p_after=_target_probs(ctx, facts, request.new_targets) if score and request.new_targets else None,
        seconds=seconds,
        info=info,
    )
    return handle, record
