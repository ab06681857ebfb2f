"""Where to edit, from evidence: the wiring of `kdel.trace.localize` into `kdel delete` and `kdel audit`.

`choose_site_layers` (the trace stage's function) traces each fact's MLP effects with a window and returns a
`LayerChoice`: the chosen site and layer with its effect size and the runner-up, the embedding-like and listed
layers it excluded, and a fallback to a per-family default when no layer reaches the minimum effect. This module
turns a choice into what the commands need:

* `site_pick(choice, site)`: the layer for a *given* site (`--site last --layer auto`, or an audit sweeping both
  sites): the best non-excluded layer at that site among the layers traced exactly, with its effect and the
  runner-up; below the minimum effect, the family's default layer (`fallback`). For the chosen site it is the
  choice itself.
* `batch_pick(picks)`: one (site, layer) for a batch of facts edited together: the pair most facts chose, ties
  broken by the larger mean effect, then by the first fact.
* `choice_from_trace(trace)`: the same decision from a stored `kdel trace` run (the audit's `--traces`).
* `uses_site(method)` / `uses_layer(method, ctx)`: whether a method reads the request's site and layer at all
  (gradient methods ignore the site: their records say `site: null`; GA/NPO ignore the layer too), so nothing is
  traced for a choice the method would ignore.
"""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np

AUTO = "auto"
MIN_EFFECT = 0.1  # the minimum normalised MLP effect a layer must reach to be chosen (else: family default)
EMBEDDING_THRESHOLD = 0.9  # effect at every subject token at or above which a layer is embedding-like
GRADIENT_METHODS = ("ft", "ga", "npo", "simnpo", "rmu")  # ignore the edit site (when a method does not say)


class LayerFallbackWarning(UserWarning):
    """No layer reached the minimum effect: the family's default layer was used."""


def uses_site(method) -> bool:
    """Whether `method` reads `request.site`: its own `uses_site` when it declares one, else every method but
    the gradient methods (fine-tuning and unlearning losses cover the whole prompt, not one key)."""
    declared = getattr(type(method), "uses_site", None)
    return bool(declared) if declared is not None else method.name not in GRADIENT_METHODS


def uses_layer(method, ctx, facts) -> bool:
    """Whether `method`'s edited layers follow `request.layer` (probed with the first and the last layer)."""
    from kdel.delete.base import DeletionRequest

    n = ctx.adapter.n_layers
    if n < 2:
        return True
    first = method.layers_of(ctx, DeletionRequest(list(facts), "erase", None, 0, "subject_last", 0))
    last = method.layers_of(ctx, DeletionRequest(list(facts), "erase", None, n - 1, "subject_last", 0))
    return first != last


def trace_settings(noise_samples: int = 10, seed: int = 0):
    from kdel.trace import TraceConfig

    return TraceConfig(noise_samples=noise_samples, seed=seed)


def choose(model, tok, facts, table, window: int | None = None, exclude_layers=(), noise_samples: int = 10,
           seed: int = 0, min_effect: float = MIN_EFFECT) -> list:
    """`LayerChoice` of each fact (gn, denoising, prob; from 24 layers two-stage: attribution ranks, the exact
    tracer confirms; below, the exact tracer alone)."""
    from kdel.trace.localize import choose_site_layers

    return choose_site_layers(model, tok, list(facts), table, window=window, exclude_layers=exclude_layers,
                              min_effect=min_effect, embedding_threshold=EMBEDDING_THRESHOLD,
                              config=trace_settings(noise_samples, seed))


def _num(x) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def site_pick(choice, site: str, family: str, n_layers: int, min_effect: float = MIN_EFFECT) -> dict:
    """The layer to edit at `site` according to `choice` (see the module docstring), as a JSON-able dict."""
    from kdel.trace.localize import family_default_layer

    excluded = {int(k): v for k, v in choice.excluded.items()}
    traced = {int(layer): e for layer, e in (choice.confirmed.get(site) or {}).items()}
    ranked = sorted(((e, -layer) for layer, e in traced.items() if layer not in excluded and np.isfinite(e)),
                    reverse=True)
    best = [(-neg, e) for e, neg in ranked[:2]]
    pick = {"site": site, "chosen_site": choice.site, "chosen_layer": choice.layer, "window": choice.window,
            "excluded": {str(k): v for k, v in sorted(excluded.items())}, "method": choice.method,
            "min_effect": min_effect, "rule": choice.rule}
    if best and best[0][1] >= min_effect:
        (layer, eff), *rest = best
        pick.update(layer=layer, effect=_num(eff), runner_up_layer=rest[0][0] if rest else None,
                    runner_up_effect=_num(rest[0][1]) if rest else None, fallback=False, fallback_reason=None)
        return pick
    layer = family_default_layer(family, n_layers, excluded)
    top = f"{best[0][1]:.3f} at layer {best[0][0]}" if best else "none"
    pick.update(layer=layer, effect=_num(traced.get(layer)), runner_up_layer=None, runner_up_effect=None,
                fallback=True,
                fallback_reason=f"no layer reaches the minimum effect {min_effect} at {site} (best: {top}); "
                                f"{family} default layer {layer} of {n_layers}")
    return pick


def batch_pick(picks: list[dict]) -> tuple[str, int]:
    """One (site, layer) for facts edited together: the most common pair, then the larger mean effect."""
    counts = Counter((p["site"], p["layer"]) for p in picks)
    effects: dict[tuple, list[float]] = {}
    for p in picks:
        effects.setdefault((p["site"], p["layer"]), []).append(p["effect"] if p["effect"] is not None else -np.inf)
    order = {key: i for i, key in reversed(list(enumerate((p["site"], p["layer"]) for p in picks)))}
    return max(counts, key=lambda k: (counts[k], float(np.mean(effects[k])), -order[k]))


def warn_fallbacks(picks: list[dict], what: str = "facts") -> None:
    """One warning line when some picks fell back to the family default."""
    fell = [p for p in picks if p["fallback"]]
    if not fell:
        return
    layers = sorted({p["layer"] for p in fell})
    warnings.warn(f"{len(fell)} of {len(picks)} {what}: {fell[0]['fallback_reason']}"
                  + (f" (layers used: {', '.join(map(str, layers))})" if len(layers) > 1 else "")
                  + f"; the window-{fell[0]['window']} trace found no clear MLP lookup, so the edit layer is a "
                  f"default, not evidence (pass --layer/--layers to choose)", LayerFallbackWarning, stacklevel=2)


def choice_from_trace(trace, family: str, exclude_layers=(), min_effect: float = MIN_EFFECT):
    """A `LayerChoice` from a stored trace (MLP, prob, denoising, every subject token and the last one traced);
    None when the trace lacks any of them."""
    from kdel.trace.localize import _decide

    if trace.config.direction != "denoise" or "mlp" not in trace.patched or "prob" not in trace.patched["mlp"]:
        return None
    norm = trace.normalized("mlp", "prob")
    cols = list(trace.subject_positions) + [trace.last]
    if np.isnan(trace.raw("mlp", "prob")[:, cols]).any():
        return None
    L = norm.shape[0]
    effects = {"subject_last": {layer: float(norm[layer, trace.last_subject]) for layer in range(L)},
               "last": {layer: float(norm[layer, trace.last]) for layer in range(L)}}
    subject = {layer: [float(norm[layer, p]) for p in trace.subject_positions] for layer in range(L)}
    choice = _decide(trace.fact_id, effects, subject, L, family, int(trace.config.window),
                     sorted(set(int(x) for x in exclude_layers)), min_effect, 2.0, EMBEDDING_THRESHOLD,
                     "reused-trace")
    choice.confirmed = effects
    return choice
