"""What a sweep aggregates (config keys `primary` and `analyses`), parsed and checked against the conditions.

- `primary`: one pre-declared hypothesis, a comparison of two conditions (graph `a` vs graph `b`): the rank
  correlation of `metric` with `vs` (one value per deleted fact, `method` at `site`) is larger on `a`
  (direction `greater`). Tested per seed and pooled over seeds; reported apart from the exploratory rows.
- `analyses.popularity`: correlations of side effects with degree per condition (exploratory family).
- `analyses.compare`: every condition against its sibling that differs only in topology (`reference`, ER by
  default): the BA × degree interaction and the degree-range-matched comparison, per seed and pooled.
- `analyses.hase`: Hase et al.'s regressions of edit success on layer and tracing effect, per seed and pooled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdel.errors import UserError
from kdel.sweep.checks import _choice, _err, _mapping, _no_unknown, _str, _str_list
from typing import TYPE_CHECKING

from kdel.sweep.checks import DEGREES, OUTCOMES, TOPOLOGIES

if TYPE_CHECKING:
    from kdel.sweep.config import Condition

DEFAULT_POPULARITY_METRICS = ("same_subject.mean_p_drop", "same_subject.flip_rate", "same_subject.any_broke",
                              "same_object.mean_p_drop", "neighbors_1hop.mean_p_drop", "unrelated.mean_p_drop",
                              "global.mean_p_drop_excluding_target", "kl.mean")
DEFAULT_HASE_Y = ("hase.efficacy_score",)
HASE_Y = ("hase.efficacy_score", "efficacy.success", "hase.paraphrase_score", "hase.neighborhood_score")
# Hase et al. (2023), GPT-J, ROME, error injection (their Figure/Table of R² by predictor; see docs/sweep.md)
PAPER_HASE = {"model": "GPT-J (6B)", "method": "ROME", "problem": "error injection",
              "r2_layer": 0.947, "r2_layer_and_tracing": 0.948, "source": "Hase et al. 2023, arXiv 2301.04213"}


def side_effect_metric_names() -> tuple[str, ...]:
    from kdel.audit.summary import side_effect_metrics

    return tuple(name for name, _ in side_effect_metrics())


@dataclass(frozen=True)
class PrimarySpec:
    """Which two conditions the primary hypothesis compares (`a` vs `b`), and the test itself (`test`: the
    stats code's primary spec: metric, predictor, method, site, layers, outcome, direction, alpha)."""

    a: str
    b: str
    test: dict = field(hash=False)
    statement: str = ""

    def to_json(self) -> dict:
        return {"a": self.a, "b": self.b, "statement": self.statement, **self.test}


def _condition(name, where: str, conditions: list[Condition]) -> Condition:
    name = _str(name, where)
    for c in conditions:
        if c.name == name:
            return c
    raise _err(where, f"no condition is named {name!r} (conditions: {', '.join(c.name for c in conditions)})")


def parse_primary(raw, conditions: list[Condition]) -> PrimarySpec:
    """`primary: {a: COND, b: COND, statement: TEXT, metric, predictor, method, site, layers, outcome, direction,
    alpha}`; the test keys are validated by kdel.audit.primary.parse_primary."""
    from kdel.audit.primary import parse_primary as stats_parse_primary

    raw = _mapping(raw, "primary")
    for k in ("a", "b", "method", "site"):
        if k not in raw:
            raise _err(f"primary.{k}", "is required")
    ca = _condition(raw["a"], "primary.a", conditions)
    cb = _condition(raw["b"], "primary.b", conditions)
    if ca.name == cb.name:
        raise _err("primary.b", "must name another condition than primary.a")
    statement = raw.get("statement", "")
    if not isinstance(statement, str):
        raise _err("primary.statement", "must be a string")
    test = {k: v for k, v in raw.items() if k not in ("a", "b", "statement")}
    try:
        spec = stats_parse_primary(test)
    except UserError as e:
        msg = str(e).removeprefix("primary: ")
        raise _err("primary", msg) from None
    for c in (ca, cb):
        if spec.method not in c.methods:
            raise _err("primary.method", f"{spec.method!r} is not a method of condition {c.name}")
        if spec.site not in c.sites:
            raise _err("primary.site", f"{spec.site!r} is not a site of condition {c.name}")
    shared = sorted(set(ca.seeds) & set(cb.seeds))
    if len(shared) < 2:
        raise _err("primary", f"conditions {ca.name} and {cb.name} share {len(shared)} seed(s); pooling needs >= 2")
    return PrimarySpec(a=ca.name, b=cb.name, test=test, statement=statement)


@dataclass(frozen=True)
class AnalysesSpec:
    popularity: bool = True
    metrics: tuple[str, ...] = DEFAULT_POPULARITY_METRICS
    vs: tuple[str, ...] = ("subject_degree",)
    outcomes: tuple[str, ...] = ("success",)
    compare: bool = True
    reference: str = "er"  # the topology every other topology is compared with
    compare_metrics: tuple[str, ...] = ("same_subject.mean_p_drop",)
    hase: bool = True
    hase_y: tuple[str, ...] = DEFAULT_HASE_Y

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def _section(raw, key: str, allowed: tuple[str, ...]) -> tuple[bool, dict]:
    v = raw.get(key, True)
    if isinstance(v, bool):
        return v, {}
    v = _mapping(v, f"analyses.{key}")
    _no_unknown(v, allowed, f"analyses.{key}")
    return True, v


def parse_analyses(raw, conditions: list[Condition]) -> AnalysesSpec:
    raw = _mapping(raw, "analyses")
    _no_unknown(raw, ("popularity", "compare", "hase"), "analyses")
    metric_names = side_effect_metric_names()
    pop_on, pop = _section(raw, "popularity", ("metrics", "vs", "outcomes"))
    cmp_on, cmp = _section(raw, "compare", ("reference", "metrics"))
    hase_on, hase = _section(raw, "hase", ("y",))
    d = AnalysesSpec()
    return AnalysesSpec(
        popularity=pop_on,
        metrics=_str_list(pop["metrics"], "analyses.popularity.metrics", metric_names) if "metrics" in pop else d.metrics,
        vs=_str_list(pop["vs"], "analyses.popularity.vs", DEGREES) if "vs" in pop else d.vs,
        outcomes=_str_list(pop["outcomes"], "analyses.popularity.outcomes", OUTCOMES) if "outcomes" in pop else d.outcomes,
        compare=cmp_on,
        reference=_choice(cmp["reference"], "analyses.compare.reference", TOPOLOGIES) if "reference" in cmp else d.reference,
        compare_metrics=(_str_list(cmp["metrics"], "analyses.compare.metrics", metric_names) if "metrics" in cmp
                         else d.compare_metrics),
        hase=hase_on,
        hase_y=_str_list(hase["y"], "analyses.hase.y", HASE_Y) if "y" in hase else d.hase_y,
    )


def comparison_pairs(conditions, reference: str) -> list[tuple[Condition, Condition]]:
    """(condition, its reference sibling): every non-reference condition paired with the condition whose
    settings differ only in topology (and the topology-specific exponent / edges), topology == reference."""
    import json

    def key(c: Condition) -> str:
        s = c.settings()
        for k in ("topology", "exponent", "edges"):
            s.pop(k)
        return json.dumps(s, sort_keys=True, default=str)

    refs = {key(c): c for c in conditions if c.topology == reference}
    return [(c, refs[key(c)]) for c in conditions if c.topology != reference and key(c) in refs]

