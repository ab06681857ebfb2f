"""Conditions × seeds → cells, and cells → stage jobs keyed by their inputs.

A cell is (condition, seed): a KG generated with that seed, a model trained on it with that seed, and an
audit of that model sampled with that seed. Each stage is a job whose key is a hash of everything that
decides its output (its settings and the keys of the stages it reads), so conditions that share a KG or a
model share the job: ROME and r-ROME on BA seed 0 read one model. Jobs live in
DIR/kgs/<key>/, DIR/models/<key>/, DIR/audits/<key>/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kdel.io import dumps_json, sha256_text
from kdel.sweep.config import Condition, SweepConfig

KINDS = ("kg", "model", "audit")
FOLDERS = {"kg": "kgs", "model": "models", "audit": "audits"}
KEY_LEN = 16


def inputs_key(inputs: dict) -> str:
    return sha256_text(dumps_json(inputs))[:KEY_LEN]


@dataclass(frozen=True)
class Job:
    kind: str
    key: str
    inputs: dict = field(hash=False, compare=False)
    deps: tuple[str, ...] = ()  # ids of the jobs whose output this one reads

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.key}"

    def dir(self, out: Path) -> Path:
        return Path(out) / FOLDERS[self.kind] / self.key


@dataclass(frozen=True)
class Cell:
    condition: str
    seed: int
    kg: str  # job keys
    model: str
    audit: str

    @property
    def id(self) -> str:
        return f"{self.condition}/seed{self.seed}"

    def to_json(self) -> dict:
        return {"condition": self.condition, "seed": self.seed, "kg": self.kg, "model": self.model, "audit": self.audit}


def kg_settings(c: Condition, seed: int) -> dict:
    """synth_kg.KGConfig keyword arguments; settings a topology ignores are left at their defaults, so BA
    conditions that differ only in the power-law exponent share one KG."""
    from synth_kg import KGConfig

    d = KGConfig()
    kw = {"topology": c.topology, "entities": c.entities, "relations": c.relations, "seed": seed, "ba_m": c.ba_m,
          "edges": None if c.topology == "ba" else c.edges,
          "exponent": c.exponent if c.topology == "powerlaw" else d.exponent,
          "attribute_relations": c.attribute_relations, "exposure": c.exposure, "repeats": c.repeats}
    if c.format != "natural":  # only named when used: bundles of the natural format keep their old inputs
        kw["text_format"] = c.format
    return kw


def train_settings(c: Condition, seed: int) -> dict:
    """kdel.train.TrainConfig keyword arguments that decide the weights (device and threads are recorded, not keyed)."""
    return {"preset": c.model, "seed": seed, "target_recall": c.target_recall, "max_steps": c.max_steps, "lr": c.lr}


def audit_config(c: Condition, seed: int):
    from kdel.audit.cases import AuditConfig

    return AuditConfig(methods=c.methods, objective=c.objective, sites=c.sites, layers=c.layers, per_bin=c.per_bin,
                       n_bins=c.bins, stratify=c.stratify, unrelated_size=c.unrelated, seed=seed,
                       hparams={m: dict(h) for m, h in c.hparams.items()}, tracing_effect=c.tracing_effect,
                       noise_samples=c.noise_samples)


@dataclass
class Plan:
    cells: list[Cell]
    jobs: dict[str, Job]  # id -> job, in dependency order (KGs, then models, then audits)

    def cells_of(self, condition: str) -> list[Cell]:
        return [c for c in self.cells if c.condition == condition]

    def counts(self) -> dict[str, int]:
        return {k: sum(1 for j in self.jobs.values() if j.kind == k) for k in KINDS}


def expand(config: SweepConfig) -> Plan:
    """Every (condition, seed) cell and the distinct stage jobs they need."""
    cells: list[Cell] = []
    by_kind: dict[str, dict[str, Job]] = {k: {} for k in KINDS}
    for c in config.conditions:
        for seed in c.seeds:
            kg_in = {"kind": "kg", "kg": kg_settings(c, seed)}
            kg = Job("kg", inputs_key(kg_in), kg_in)
            model_in = {"kind": "model", "kg": kg.key, "train": train_settings(c, seed)}
            model = Job("model", inputs_key(model_in), model_in, (kg.id,))
            audit_in = {"kind": "audit", "kg": kg.key, "model": model.key, "audit": audit_config(c, seed).to_json()}
            audit = Job("audit", inputs_key(audit_in), audit_in, (kg.id, model.id))
            for j in (kg, model, audit):
                by_kind[j.kind].setdefault(j.id, j)
            cells.append(Cell(c.name, seed, kg.key, model.key, audit.key))
    jobs = {jid: j for k in KINDS for jid, j in by_kind[k].items()}
    return Plan(cells, jobs)
