"""The deletion interface: a method edits weights in place; the framework makes every edit reversible.

`apply_deletion(method, ctx, request)`:
  1. checks that the method supports the objective, and chooses the new targets a rewriting objective needs
     when the request has none (kdel.delete.targets: replace -> an object of the same relation, seeded;
     tracing_reversal -> the noised-subject model's prediction), recording where each came from;
  2. asks the method which parameters it will touch, and snapshots them;
  3. lets the method edit them in place (`method.edit`);
  4. refuses (and reverts) an update that is not finite;
  5. records ||ΔW||_F of each touched matrix, the target probabilities before/after and the efficacy of each
     fact (kdel.delete.efficacy: scored on the model with the weights applied, never under an optimisation
     hook) and seconds;
  6. returns an `EditHandle` whose `revert()` restores the original weights bit for bit, and whose
     `verify(mode)` checks it ("touched": the touched tensors equal their snapshot; "full": the whole
     model's state hash equals a hash taken before the edit).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from kdel.delete.efficacy import EfficacyProbe, FactEfficacy
from kdel.delete.noise import NOISE_SAMPLES, NOISE_SCALE, NoiseSettings
from kdel.delete.objectives import get_objective
from kdel.delete.targets import choose_new_targets
from kdel.errors import UserError
from kdel.facts import Fact, FactTable
from kdel.models.adapter import ModelAdapter
from kdel.models.positions import SITES

VERIFY_MODES = ("none", "touched", "full")


@dataclass
class DeletionRequest:
    """What to delete: one or several facts (a batch), the objective, and where to edit."""

    facts: list[Fact]
    objective: str = "erase"
    new_targets: list[str] | None = None  # per fact, for objectives that rewrite (replace, unknown, ...)
    layer: int | None = None  # central/only layer for locate-then-edit methods; None = the method's default
    site: str = "subject_last"  # 'subject_last' (key at the last subject token) or 'last' (last prompt token)
    seed: int = 0
    target_sources: list[str] | None = None  # where each new target came from (kdel.delete.targets.NewTarget)
    noise_samples: int = NOISE_SAMPLES  # noised-subject objectives: noise draws (optimisation and evaluation)
    noise_scale: float = NOISE_SCALE  # ... their std in units of the token-embedding std

    def __post_init__(self):
        if not self.facts:
            raise UserError("no facts to delete")
        if self.site not in SITES:
            raise UserError(f"unknown edit site {self.site!r}: use {' or '.join(SITES)}")
        if self.noise_samples < 1 or not self.noise_scale > 0:
            raise UserError("noise_samples must be >= 1 and noise_scale > 0")

    @property
    def noise_settings(self) -> NoiseSettings:
        return NoiseSettings(self.noise_samples, self.noise_scale, self.seed)


@dataclass
class EditContext:
    """Everything a method may use: the model (edited in place), its tokenizer and adapter, the facts."""

    model: torch.nn.Module
    tokenizer: Any
    table: FactTable
    cache_dir: Path | None = None  # where key statistics are cached (None = no disk cache)
    adapter: ModelAdapter | None = None
    unrelated_pool: list[int] | None = None  # the audit's fixed `unrelated` sample: retain sets must avoid it
    # {layer: KeyStats} to use instead of computing C on the model as it is now: a sequential trial pins the
    # unedited model's statistics for all its steps (kdel.delete.covariance.method_key_statistics)
    pinned_key_stats: dict | None = None

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
    site: str | None  # None for methods that ignore the edit site (the gradient methods)
    hparams: dict
    delta_norms: dict[str, float]  # parameter name -> ||ΔW||_F
    p_before: list[float]  # p(true object) of each fact, canonical prompt, before
    p_after: list[float]
    new_target_p_before: list[float] | None
    new_target_p_after: list[float] | None
    seconds: float
    info: dict = field(default_factory=dict)  # method-specific: C token count, condition number, losses...
    new_targets: list[str] | None = None  # the rewriting objective's target of each fact
    target_sources: list[str] | None = None  # where each came from: given, same_relation, corrupted_prediction...
    efficacy: list[FactEfficacy] = field(default_factory=list)  # per fact, on the edited weights

    @property
    def total_delta_norm(self) -> float:
        return float(sum(v**2 for v in self.delta_norms.values()) ** 0.5)

    @property
    def success(self) -> bool:
        """Every fact met the objective on its canonical prompt, with the weights applied."""
        return bool(self.efficacy) and all(e.success for e in self.efficacy)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["total_delta_norm"] = self.total_delta_norm
        d["success"] = self.success
        return d


def model_state_hash(model: torch.nn.Module) -> str:
    """sha256 of every tensor of the model's state dict (names and bytes, in name order)."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class EditHandle:
    """Restores the snapshotted parameters bit for bit (idempotent) and can check that it did."""

    def __init__(self, model: torch.nn.Module, originals: dict[str, torch.Tensor], base_hash: str | None = None):
        self.model = model
        self.originals = originals
        self.base_hash = base_hash  # the whole model's hash before the edit (apply_deletion(verify="full"))
        self.reverted = False

    @torch.no_grad()
    def revert(self) -> None:
        if self.reverted:
            return
        for name, value in self.originals.items():
            self.model.get_parameter(name).copy_(value)
        self.reverted = True

    def verify(self, mode: str = "touched", base_hash: str | None = None) -> bool:
        """After `revert()`: "touched" checks that every touched tensor equals its snapshot bit for bit; "full"
        also that the whole model's state hash equals `base_hash` (or the one taken at apply time); "none"
        checks nothing. Raises RuntimeError when the model is not back (continuing on it would be wrong)."""
        if mode not in VERIFY_MODES:
            raise UserError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {mode!r}")
        if mode == "none":
            return True
        if not self.reverted:
            raise RuntimeError("verify() before revert()")
        for name, orig in self.originals.items():
            if not torch.equal(self.model.get_parameter(name), orig):
                raise RuntimeError(f"revert failed: {name} differs from its snapshot")
        if mode == "full":
            expected = base_hash or self.base_hash
            if expected is None:
                raise RuntimeError("full verification needs the model's hash from before the edit")
            if model_state_hash(self.model) != expected:
                raise RuntimeError("revert failed: the model's weights hash differs from the base model's")
        return True


class DeletionMethod(ABC):
    """A deletion/editing method. Subclasses set `name` and `hparams_class` and implement two methods."""

    name: ClassVar[str]
    hparams_class: ClassVar[type]
    # Objectives this method supports (the framework rejects others with a clear message).
    objectives: ClassVar[tuple[str, ...]] = ("erase", "replace", "unknown")
    uses_site: ClassVar[bool] = True  # False: the method ignores request.site (its record says site None)

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
    """Class decorator: make a method available by its `name`; a name already taken by another class is refused."""
    known = _REGISTRY.get(cls.name)
    if known is not None and known is not cls:
        raise ValueError(f"method name {cls.name!r} is already registered by {known.__module__}.{known.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin_methods() -> None:
    import importlib
    import pkgutil
    from pathlib import Path

    for info in pkgutil.iter_modules([str(Path(__file__).resolve().parent)]):  # the method sub-packages
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


def resolve_targets(ctx: EditContext, request: DeletionRequest) -> tuple[DeletionRequest, list[dict]]:
    """The request with the new targets its objective needs (chosen when not given) and their sources, and
    the choice of each (target, source, and for tracing_reversal its probability under the noised subject)."""
    objective = get_objective(request.objective)
    if not objective.rewrites:
        if request.new_targets:
            raise UserError(f"objective {request.objective!r} takes no new target")
        return request, []
    if request.new_targets:
        if len(request.new_targets) != len(request.facts):
            raise UserError(f"{len(request.new_targets)} new targets given for {len(request.facts)} facts")
        sources = list(request.target_sources or ["given"] * len(request.facts))
        request = dataclasses.replace(request, new_targets=list(request.new_targets), target_sources=sources)
        return request, [{"target": t, "source": s} for t, s in zip(request.new_targets, sources)]
    chosen = choose_new_targets(objective, request.facts, ctx.table, None, request.seed, ctx=ctx,
                                noise_settings=request.noise_settings)
    request = dataclasses.replace(request, new_targets=[t.text for t in chosen], target_sources=[t.source for t in chosen])
    return request, [t.to_json() for t in chosen]


def apply_deletion(method: DeletionMethod, ctx: EditContext, request: DeletionRequest,
                   verify: str = "touched", *, score: bool = True) -> tuple[EditHandle, EditRecord]:
    """Apply `method` to `ctx.model` in place; return the revert handle and the record.

    `verify="full"` hashes the whole model first, so that `handle.verify("full")` can check the revert.
    `score=False` leaves the record's p_before/p_after fields None and efficacy empty, for a caller that scores the
    targets in its own batched pass (the audit), so a case scores its target once."""
    objective = get_objective(request.objective)
    if request.objective not in method.objectives:
        raise UserError(
            f"method {method.name!r} does not support objective {request.objective!r} "
            f"(it supports {', '.join(method.objectives)})"
        )
    if verify not in VERIFY_MODES:
        raise UserError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {verify!r}")
    if request.layer is not None:
        ctx.adapter._check_layer(request.layer)
    request, choices = resolve_targets(ctx, request)
    probe = EfficacyProbe(ctx, request, request.new_targets, request.noise_settings) if score else None
    before = probe.score() if score else None

    names = method.parameters_to_edit(ctx, request)
    originals = {n: ctx.model.get_parameter(n).detach().clone() for n in names}
    handle = EditHandle(ctx.model, originals, model_state_hash(ctx.model) if verify == "full" else None)
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

    after = probe.score() if score else None
    if objective.noised or objective.new_target == "corrupted":
        info = {**info, "noise": dataclasses.asdict(request.noise_settings)}
    if choices:
        info = {**info, "new_targets": choices}
    record = EditRecord(
        method=method.name,
        objective=request.objective,
        fact_ids=[f.id for f in request.facts],
        layers=method.layers_of(ctx, request),
        site=request.site if method.uses_site else None,
        hparams=dataclasses.asdict(method.hparams) if dataclasses.is_dataclass(method.hparams) else {},
        delta_norms=deltas,
        p_before=probe.true_p(before) if score else None,
        p_after=probe.true_p(after) if score else None,
        new_target_p_before=probe.new_p(before) if score else None,
        new_target_p_after=probe.new_p(after) if score else None,
        seconds=seconds,
        info=info,
        new_targets=request.new_targets,
        target_sources=request.target_sources,
        efficacy=probe.outcomes(before, after) if score else [],
    )
    return handle, record
