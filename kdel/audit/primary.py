"""The experiment's one primary hypothesis: its spec, its test, and a verdict sentence written from the numbers.

Spec (a dict in the audit config's `primary`, or the one-line form
`"same_subject.mean_p_drop ~ subject_degree, rome@last, per_fact, success, greater"`):
  metric     a side-effect metric of the summary's correlations (e.g. same_subject.mean_p_drop)
  predictor  subject_degree | object_degree
  method, site   the deletion method and edit site (None: rome if present else the first method; last if
             present else the first site)
  layers     per_fact (each fact's mean over the layers it was edited at) or one layer index
  outcome    success (default; wrecked edits excluded) | failed | all
  direction  greater (ρ > 0) | less | two-sided
  alpha      the test's level (default 0.05)
A declared primary is one pre-specified test: its own p decides the verdict (not corrected for the
exploratory family; the Holm p it would have inside that family is reported beside it). When the config
declares none, the default spec is used but treated as exploratory: the verdict uses its Holm p within the
exploratory family (the primary included). docs/statistics.md explains the choice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from kdel.audit.inference import PER_FACT, FactTable, correlation_row, stratum
from kdel.audit.metrics import OUTCOMES, PREDICTORS, case_metrics, side_effect_metrics
from kdel.errors import UserError
from kdel.stats.estimate import DIRECTIONS
from kdel.stats.multiple import holm

METRIC_WORDS = {"mean_p_drop": "mean drop of p(true object)", "flip_rate": "flip rate", "any_broke": "any-broke rate",
                "acc_drop": "accuracy drop", "flip_rate_excluding_target": "flip rate",
                "mean_p_drop_excluding_target": "mean drop of p(true object)", "mean": "KL divergence"}
GROUP_WORDS = {"global": "all other facts", "kl": "unrelated prompts"}
PREDICTOR_WORDS = {"subject_degree": "subject popularity", "object_degree": "object popularity"}
OUTCOME_WORDS = {"success": "successful deletions", "failed": "failed deletions", "all": "all edits"}
DROP_WORDS = {"error": "errors", "wrecked": "wrecked edits", "failed_edit": "failed edits",
              "successful_edit": "successful edits", "empty_group": "with an empty probe group",
              "missing_value": "with a missing value"}
DIRECTION_WORDS = {"greater": "rises with", "less": "falls with", "two-sided": "changes with"}


@dataclass(frozen=True)
class PrimarySpec:
    metric: str = "same_subject.mean_p_drop"
    predictor: str = "subject_degree"
    method: str | None = None
    site: str | None = None
    layers: str | int = PER_FACT
    outcome: str = "success"
    direction: str = "greater"
    alpha: float = 0.05
    declared: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """The one-line form (parse_primary reads it back)."""
        where = f"{self.method or '?'}@{self.site or '?'}"
        return (f"{self.metric} ~ {self.predictor}, {where}, {self.layers}, {self.outcome}, {self.direction}, "
                f"alpha={self.alpha:g}")

    def validate(self) -> "PrimarySpec":
        metrics = {m for m, _ in side_effect_metrics()}
        if self.metric not in metrics:
            raise UserError(f"primary: unknown metric {self.metric!r}: choose from {', '.join(sorted(metrics))}")
        if self.predictor not in PREDICTORS:
            raise UserError(f"primary: predictor must be {' or '.join(PREDICTORS)}, got {self.predictor!r}")
        if self.outcome not in OUTCOMES:
            raise UserError(f"primary: outcome must be {', '.join(OUTCOMES)}, got {self.outcome!r}")
        if self.direction not in DIRECTIONS:
            raise UserError(f"primary: direction must be {', '.join(DIRECTIONS)}, got {self.direction!r}")
        if self.layers != PER_FACT and (isinstance(self.layers, bool) or not isinstance(self.layers, int)
                                        or self.layers < 0):
            raise UserError(f"primary: layers must be {PER_FACT} or a layer index, got {self.layers!r}")
        if not 0 < float(self.alpha) < 1:
            raise UserError(f"primary: alpha must lie in (0, 1), got {self.alpha!r}")
        return self


def _parse_layers(v):
    if isinstance(v, str):
        w = v.strip().lower().replace("-", "_")
        if w in (PER_FACT, "mean", "per_fact_mean"):
            return PER_FACT
        w = w.removeprefix("layer").strip()
        if w.isdigit():
            return int(w)
        raise UserError(f"primary: layers must be {PER_FACT} or a layer index, got {v!r}")
    return v


def parse_primary(value) -> PrimarySpec | None:
    """A PrimarySpec from a dict, the one-line string form, an existing spec, or None (no primary declared)."""
    if value is None or isinstance(value, PrimarySpec):
        return value.validate() if value is not None else None
    if isinstance(value, dict):
        known = set(PrimarySpec.__dataclass_fields__) - {"declared"}
        extra = set(value) - known
        if extra:
            raise UserError(f"primary: unknown key(s) {', '.join(sorted(extra))}; known: {', '.join(sorted(known))}")
        d = dict(value)
        if "layers" in d:
            d["layers"] = _parse_layers(d["layers"])
        return PrimarySpec(**d).validate()
    if not isinstance(value, str):
        raise UserError(f"primary: expected a mapping or a one-line spec, got {type(value).__name__}")
    head, *rest = [p.strip() for p in value.split(",")]
    if "~" not in head:
        raise UserError(f"primary: {value!r} lacks 'metric ~ predictor'")
    metric, predictor = (p.strip() for p in head.split("~", 1))
    d: dict = {"metric": metric, "predictor": predictor}
    for tok in rest:
        low = tok.lower()
        if "@" in tok:
            d["method"], d["site"] = (p.strip() for p in tok.split("@", 1))
        elif low.startswith("alpha"):
            try:
                d["alpha"] = float(low.split("=", 1)[1])
            except (IndexError, ValueError):
                raise UserError(f"primary: cannot read {tok!r} (write alpha=0.05)") from None
        elif low in OUTCOMES:
            d["outcome"] = low
        elif low in DIRECTIONS:
            d["direction"] = low
        elif tok:
            d["layers"] = _parse_layers(tok)
    return PrimarySpec(**d).validate()


def resolve(spec: PrimarySpec | None, cases: list[dict]) -> PrimarySpec:
    """Fill the default spec (declared=False) and any missing method/site from the cases."""
    spec = spec or PrimarySpec(declared=False)
    methods = sorted({c["spec"]["method"] for c in cases})
    sites = sorted({c["spec"]["site"] for c in cases})
    method = spec.method or ("rome" if "rome" in methods else (methods[0] if methods else None))
    site = spec.site or ("last" if "last" in sites else (sites[0] if sites else None))
    return replace(spec, method=method, site=site)


def metric_words(metric: str) -> str:
    group, _, key = metric.partition(".")
    where = GROUP_WORDS.get(group, group.replace("_", "-") + " facts")
    return f"{METRIC_WORDS.get(key, key.replace('_', ' '))} of {where}"


def primary_table(cases: list[dict], spec: PrimarySpec) -> FactTable | None:
    """The facts the (resolved) primary hypothesis is tested on; None when no ok case has its method and site."""
    cases = sorted(cases, key=lambda c: c["case_id"])
    ok = [c for c in cases if c["status"] == "ok"]
    if not any((c["spec"]["method"], c["spec"]["site"]) == (spec.method, spec.site) for c in ok):
        return None
    errors = [c for c in cases if c["status"] != "ok"]
    names = [spec.metric, "delta_norm"] + [s for m, s in side_effect_metrics() if m == spec.metric and s]
    return stratum(ok, [case_metrics(c) for c in ok], errors, spec.method, spec.site, spec.layers, spec.outcome,
                   names)


def evaluate_primary(cases: list[dict], spec: PrimarySpec | None = None, seed: int = 0, n_boot: int = 1000,
                     level: float = 0.95, family_p: list | None = None) -> dict:
    """The primary hypothesis tested on the cases: a correlation row (ρ, CI, p, partial ρ, effects, drops)
    plus the spec, the p that decides, the verdict sentence. `family_p`: the exploratory family's p-values
    (for the Holm p the primary has inside it)."""
    spec = resolve(spec, cases)
    out = {"spec": spec.to_dict(), "hypothesis": spec.describe(), "declared": spec.declared, "level": level}
    t = primary_table(cases, spec)
    if t is None:
        out.update(rho=None, p=None, null_reason=f"no completed case of {spec.method} @ {spec.site}",
                   n_facts=0, n_subjects=0)
    else:
        out.update(correlation_row(t, spec.metric, spec.predictor, seed, n_boot, level, spec.direction))
    fam = [p for p in (family_p or []) if p is not None]
    out["p_holm_in_family"] = holm(fam + [out["p"]])[-1] if out.get("p") is not None else None
    out["family_size"] = len(fam) + 1
    out["p_decides"] = out["p"] if spec.declared else out["p_holm_in_family"]
    out["p_decides_kind"] = ("p of the one pre-declared test" if spec.declared else
                             f"Holm p over {len(fam) + 1} tests (no primary declared: the default is exploratory)")
    out["significant"] = out["p_decides"] is not None and out["p_decides"] < spec.alpha
    out["verdict"] = verdict(out)
    return out


def _r(v, d: int = 2) -> str:
    return "–" if v is None else f"{v:.{d}f}"


def p_text(label: str, v) -> str:
    """'p = 0.035', 'p < 0.001' or 'p = –' (with any label, e.g. 'one-sided Holm p')."""
    if v is None:
        return f"{label} = –"
    return f"{label} < 0.001" if v < 0.001 else f"{label} = {v:.3f}"


def claim(spec: dict) -> str:
    return f"{metric_words(spec['metric'])} {DIRECTION_WORDS[spec['direction']]} {PREDICTOR_WORDS[spec['predictor']]}"


def where(spec: dict) -> str:
    lay = "per fact" if spec["layers"] == PER_FACT else f"layer {spec['layers']}"
    return f"{spec['method']} @ {spec['site']}, {lay}, {OUTCOME_WORDS[spec['outcome']]}"


def dropped_text(dropped: dict) -> str:
    """'24 failed edits, 1 error' from a {reason: count} dict (zero counts left out)."""
    return ", ".join(f"{v} {DROP_WORDS.get(k, k.replace('_', ' '))}" for k, v in dropped.items() if v) or "none"


def verdict(res: dict) -> str:
    """One sentence from the numbers: 'Evidence that …' / 'No evidence that …' / '… could not be tested: …'."""
    spec = res["spec"]
    what = f"the {claim(spec)} ({where(spec)})"
    if res.get("rho") is None:
        return f"Whether {what} could not be tested: {res.get('null_reason')}."
    n = f"n = {res['n_facts']} facts of {res['n_subjects']} subjects"
    if res.get("p_decides") is None:
        return f"Not enough data to test whether {what}: ρ = {_r(res['rho'])}, {n} ({res.get('null_reason')})."
    kind = "p" if spec["declared"] else "Holm p"
    if spec["direction"] != "two-sided":
        kind = "one-sided " + kind
    lvl = round(100 * res.get("level", 0.95))
    nums = (f"ρ = {_r(res['rho'])}, {lvl}% CI [{_r(res['ci_lo'])}, {_r(res['ci_hi'])}], "
            f"{p_text(kind, res['p_decides'])}; {n}")
    return f"{'Evidence' if res['significant'] else 'No evidence'} that {what}: {nums}."


def effect_sentence(res: dict, digits: int = 3) -> str | None:
    """The effect in the metric's own units: hubs (top decile of the predictor) minus the rest, with its CI."""
    h = res.get("hubs_minus_rest") or {}
    if h.get("estimate") is None:
        return None
    ci = f" [{h['lo']:+.{digits}f}, {h['hi']:+.{digits}f}]" if h.get("lo") is not None else ""
    return (f"In natural units: hubs (top decile, {res['spec']['predictor'].replace('_', ' ')} ≥ {h['threshold']:g}; "
            f"{h['n_hubs']} facts of {h['hub_subjects']} subjects) minus the other {h['n_rest']} facts: "
            f"{h['estimate']:+.{digits}f}{ci} in {metric_words(res['spec']['metric'])}.")
