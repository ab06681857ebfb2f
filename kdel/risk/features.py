"""Risk features of every probe fact p for one deletion case (target t, method, site, layer), before editing.

The transfer of a rank-one update (ROME, r-ROME). The update is ΔW = c uᵀ with u = C⁻¹k_avg (k_avg the target's
mean key over its edit texts, C = E[k kᵀ]) and c = δ / (uᵀk*), k* the key the update is exact for (the bare
prompt's key for ROME, k_avg for r-ROME), δ the optimised change of the MLP output at k*. At any position with
key k the MLP output moves by ΔW k = δ · κ with

    κ(k) = (C⁻¹k_avg)ᵀ k / (C⁻¹k_avg)ᵀ k*        (κ(k*) = 1; κ is exact: the key precedes the edited matrix)

`kappa_site` is κ at p's own edit site; κ is also taken at every position that feeds p's answer.
"After the nonlinearity": what the move δ·κ does to log p(o_p) once it has passed attention, the later layers
and the softmax, to first order: Δlog p(o_p) ≈ Σ_j κ_j(p) g_{p,j}ᵀ δ̂ (g_{p,j} = d log p(o_p) / d MLP output at
position j), with δ̂ the smallest first-order δ that erases t with the method's margin,
δ̂ = −(margin_t + m) g_t / ‖g_t‖² (g_t at t's site), shortened to the method's bound ‖δ‖ <= clamp·‖v0‖ (v0 the
MLP output at t's site) as the optimisation is. `fo_dlogp` is that estimate, `fo_margin_after` p's margin
plus it (< 0: the first-order predictor says p flips).

Every feature's name and order is fixed by FEATURE_VERSION: a fitted risk model records the version it was
fitted on and refuses features of another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kdel.risk.names import (  # noqa: F401 - re-exported
    CASE_FEATURES,
    FEATURE_VERSION,
    FEATURES,
    KNOWN_METHODS,
    PROBE_FEATURES,
    RANK_ONE,
)


@dataclass
class TargetKeys:
    """The target's side of a rank-one update at (site, layer): u = C⁻¹k_avg, k*, and κ of the edit texts."""

    u: torch.Tensor  # (d_mlp,) float64
    k_exact: torch.Tensor  # (d_mlp,) float64
    denominator: float  # uᵀk*
    kappa_items: np.ndarray  # κ of each edit text's key (the canonical bare prompt first)
    exact_for: str  # bare | averaged


@dataclass
class CaseFeatures:
    """The feature matrix of one case: one row per probe fact (every fact but the target, table order)."""

    fact_ids: np.ndarray  # (m,) probe fact ids
    X: np.ndarray  # (m, len(FEATURES)) float64
    case_x: np.ndarray  # (len(CASE_FEATURES),) float64

    def column(self, name: str) -> np.ndarray:
        return self.X[:, FEATURES.index(name)]


def cosine_rows(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(A, axis=1)
    nb = np.linalg.norm(b)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (A @ b) / (na * nb)
    return np.nan_to_num(out)


def object_density(object_vec: np.ndarray, targets: list[str], k: int = 5) -> np.ndarray:
    """Per fact: mean cosine of its object's unembedding direction to its `k` nearest other objects."""
    names = sorted(set(targets))
    first = {}
    for i, t in enumerate(targets):
        first.setdefault(t, i)
    V = object_vec[[first[n] for n in names]]
    S = V @ V.T
    np.fill_diagonal(S, -np.inf)
    kk = max(1, min(k, len(names) - 1))
    if len(names) < 2:
        dens = np.zeros(len(names))
    else:
        dens = np.sort(S, axis=1)[:, -kk:].mean(axis=1)
    by_name = dict(zip(names, dens))
    return np.array([by_name[t] for t in targets])


def relation_vectors(M: np.ndarray, relations: list[str | None]) -> dict[str, np.ndarray]:
    """Per relation: the mean row of M over its facts minus the mean over all facts (its direction)."""
    centre = M.mean(axis=0)
    out = {}
    for r in sorted({r for r in relations if r is not None}):
        idx = [i for i, x in enumerate(relations) if x == r]
        out[r] = M[idx].mean(axis=0) - centre
    return out


def _rel_sim(vecs: dict[str, np.ndarray], relations: list[str | None], r_t: str | None) -> np.ndarray:
    if r_t is None or r_t not in vecs:
        return np.zeros(len(relations))
    names = list(vecs)
    sims = cosine_rows(np.stack([vecs[n] for n in names]), vecs[r_t])
    by = dict(zip(names, sims))
    return np.array([by.get(r, 0.0) if r is not None else 0.0 for r in relations])


def kappa_matrix(base, layer: int, tk: TargetKeys) -> torch.Tensor:
    """(n, T) κ at every position of every fact (0 beyond each fact's length)."""
    K = base.keys[layer]
    kap = (K.double() @ tk.u) / tk.denominator
    return kap * base.mask()


def first_order_dlogp(base, layer: int, kap: torch.Tensor, delta_hat: torch.Tensor) -> np.ndarray:
    """Σ_j κ_j(p) g_{p,j}ᵀ δ̂ for every fact p."""
    gd = base.grads[layer].double() @ delta_hat  # (n, T)
    return (kap * gd).sum(dim=1).numpy()


def build_case_features(base, table, groups: dict[str, list[int]], target_id: int, method: str, site: str,
                        layer: int, tk: TargetKeys, tracing_effect: float | None, margin_hp: float,
                        clamp: float | None, densities: np.ndarray, rel_keys: dict, rel_values: dict) -> CaseFeatures:
    """The features of every fact but the target (see the module docstring)."""
    facts = table.facts
    n = len(facts)
    t = facts[target_id]
    kap = kappa_matrix(base, layer, tk)
    rows = torch.arange(n)
    kappa_site = kap[rows, torch.as_tensor(base.site_pos[site])].numpy()
    kappa_subject = kap[rows, torch.as_tensor(base.site_pos["subject_last"])].numpy()
    kappa_last = kap[rows, torch.as_tensor(base.site_pos["last"])].numpy()
    kappa_absmax = kap.abs().max(dim=1).values.numpy()

    G = base.grad_at(site, layer)  # (n, d_model)
    g_t = G[target_id]
    gnorm2 = float(g_t @ g_t)
    need = max(float(base.margin[target_id]), 0.0) + margin_hp
    delta_hat = -need * g_t / gnorm2 if gnorm2 > 0 else torch.zeros_like(g_t)
    v0 = float(base.values[(site, layer)][target_id].norm())
    fo_norm_ratio = float(delta_hat.norm()) / v0 if v0 > 0 else 0.0  # > clamp: the edit cannot erase to 1st order
    if clamp is not None and float(delta_hat.norm()) > clamp * v0:  # the method's own bound on ||δ||
        delta_hat = delta_hat * (clamp * v0 / float(delta_hat.norm()))
    fo = first_order_dlogp(base, layer, kap, delta_hat)

    grad_cos = cosine_rows(G.numpy(), g_t.numpy())
    key_cos = cosine_rows(base.key_at(site, layer).numpy(), tk.k_exact.numpy())
    relations = [f.relation for f in facts]
    rel_k = _rel_sim(rel_keys, relations, t.relation)
    rel_v = _rel_sim(rel_values, relations, t.relation)
    obj_sim = base.object_vec @ base.object_vec[target_id]

    hop1 = np.zeros(n)
    hop1[groups.get("neighbors_1hop", [])] = 1.0
    hop2 = np.zeros(n)
    hop2[groups.get("neighbors_2hop", [])] = 1.0
    subj = np.array([f.subject == t.subject for f in facts], dtype=float)
    obj = np.array([f.target == t.target for f in facts], dtype=float)
    rel = np.array([f.relation is not None and f.relation == t.relation for f in facts], dtype=float)
    s_is_o = np.array([f.subject == t.target for f in facts], dtype=float)
    o_is_s = np.array([f.target == t.subject for f in facts], dtype=float)
    sdeg = np.log1p([f.subject_popularity for f in facts])
    odeg = np.log1p([f.object_popularity for f in facts])

    probe = np.stack([
        kappa_site, kappa_subject, kappa_last, kappa_absmax, fo, base.margin + fo,
        grad_cos, key_cos, rel_k, rel_v, densities, obj_sim,
        subj, obj, rel, s_is_o, o_is_s, hop1, hop2, sdeg, odeg, base.margin, base.logp,
    ], axis=1)
    kap_items = tk.kappa_items
    case_x = np.array([
        layer / max(base.n_layers - 1, 1), float(site == "last"), float(method in RANK_ONE),
        *(float(method == m) for m in KNOWN_METHODS),
        float(tracing_effect) if tracing_effect is not None else 0.0,
        float(base.logp[target_id]), float(base.margin[target_id]),
        float(np.log1p(t.subject_popularity)), float(np.log1p(t.object_popularity)),
        float(densities[target_id]), fo_norm_ratio,
        float(np.mean(kap_items)) if len(kap_items) else 1.0, float(np.min(kap_items)) if len(kap_items) else 1.0,
    ])
    keep = np.array([i for i in range(n) if i != target_id], dtype=np.int64)
    X = np.concatenate([probe[keep], np.repeat(case_x[None, :], len(keep), axis=0)], axis=1)
    return CaseFeatures(fact_ids=keep, X=np.nan_to_num(X), case_x=np.nan_to_num(case_x))
