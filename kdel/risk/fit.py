"""Fit the risk predictor on audit rows (scikit-learn), with grouped cross-validation by subject, calibrate it,
and export it as data (kdel.risk.model).

Heads: `flip` (probe fact flipped: recalled before, not after), `p_drop` (p(o) before − after, per probe fact)
and `success` (the deletion met its objective; one row per case, case features only).
Kinds: `gbdt` (gradient-boosted trees, the default) or `logistic` (standardised logistic / linear model).

Grouped CV: folds are whole clusters, a cluster being the deleted fact's subject in one audited model/KG
(`grouped_folds`): no subject is deleted in a training fold and in its test fold. The out-of-fold predictions
give the cross-validated metrics and the isotonic calibration map of each probability head; the final heads
are then fitted on every row. Flip rows are subsampled to at most `max_rows` (every flipped row kept, the
others drawn uniformly and weighted by the inverse of their drawing rate), which keeps gbdt fits to seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdel.errors import UserError
from kdel.risk.model import Head, RiskModel

KINDS = ("gbdt", "logistic")


@dataclass
class FitSettings:
    kind: str = "gbdt"
    folds: int = 5
    max_rows: int = 5000
    n_estimators: int = 80
    max_depth: int = 3
    learning_rate: float = 0.1
    seed: int = 0

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"unknown model kind {self.kind!r}: use gbdt or logistic")
        if self.folds < 2:
            raise UserError(f"--folds must be >= 2, got {self.folds}")
        if self.max_rows < 100:
            raise UserError(f"--max-rows must be >= 100, got {self.max_rows}")


def grouped_folds(groups, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs: every group in exactly one test fold, never in its train fold."""
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups, dtype=object)
    n_groups = len(set(groups.tolist()))
    if n_groups < 2:
        raise UserError(f"grouped cross-validation needs deletions of at least 2 subjects, got {n_groups}")
    k = min(k, n_groups)
    labels = {g: i for i, g in enumerate(sorted(set(groups.tolist())))}
    codes = np.array([labels[g] for g in groups.tolist()])
    return [(tr, te) for tr, te in GroupKFold(n_splits=k).split(np.zeros(len(codes)), groups=codes)]


def subsample(y: np.ndarray, max_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights): every positive row, negatives drawn uniformly up to `max_rows` in all, weighted."""
    pos = np.flatnonzero(y)
    neg = np.flatnonzero(~y)
    room = max(max_rows - len(pos), min(len(neg), max_rows // 2))
    if len(neg) <= room:
        return np.arange(len(y)), np.ones(len(y))
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(neg, size=room, replace=False))
    idx = np.sort(np.concatenate([pos, pick]))
    w = np.ones(len(idx))
    w[~y[idx]] = len(neg) / room
    return idx, w


# -- fitting and exporting one head -----------------------------------------------------------------------
def _fit_head(X, y, w, classify: bool, s: FitSettings, small: bool = False) -> Head:
    if s.kind == "logistic":
        return _fit_linear(X, y, w, classify)
    from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

    depth = 2 if small else s.max_depth
    leaf = 5 if small else 20
    n_est = min(100, s.n_estimators) if small else s.n_estimators
    if classify:
        est = GradientBoostingClassifier(init="zero", n_estimators=n_est, max_depth=depth, min_samples_leaf=leaf,
                                         learning_rate=s.learning_rate, subsample=0.8, random_state=s.seed)
        if len(set(np.asarray(y).tolist())) < 2:
            const = 1.0 if bool(np.asarray(y)[0]) else 0.0
            return Head("logistic", "logistic", _logit(const), _zero_linear(X.shape[1]))
        est.fit(X, y, sample_weight=w)
        return Head("gbdt", "logistic", 0.0, _export_trees(est))
    mean = float(np.average(y, weights=w))
    est = GradientBoostingRegressor(init="zero", n_estimators=n_est, max_depth=depth, min_samples_leaf=leaf,
                                    learning_rate=s.learning_rate, subsample=0.8, random_state=s.seed)
    est.fit(X, y - mean, sample_weight=w)
    return Head("gbdt", "identity", mean, _export_trees(est))


def _export_trees(est) -> dict:
    trees = []
    for reg in est.estimators_[:, 0]:
        t = reg.tree_
        trees.append({"feature": t.feature.astype(np.int64), "threshold": t.threshold.astype(np.float64),
                      "left": t.children_left.astype(np.int64), "right": t.children_right.astype(np.int64),
                      "value": t.value[:, 0, 0].astype(np.float64)})
    return {"learning_rate": float(est.learning_rate), "trees": trees}


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def _zero_linear(d: int) -> dict:
    return {"mean": np.zeros(d), "scale": np.ones(d), "coef": np.zeros(d)}


def _fit_linear(X, y, w, classify: bool) -> Head:
    from sklearn.linear_model import LogisticRegression, Ridge

    mean = np.average(X, axis=0, weights=w)
    scale = np.sqrt(np.average((X - mean) ** 2, axis=0, weights=w))
    scale = np.where(scale > 1e-12, scale, 1.0)
    Z = (X - mean) / scale
    if classify:
        if len(set(np.asarray(y).tolist())) < 2:
            return Head("logistic", "logistic", _logit(1.0 if bool(np.asarray(y)[0]) else 0.0), _zero_linear(X.shape[1]))
        est = LogisticRegression(C=1.0, max_iter=2000).fit(Z, y, sample_weight=w)
        return Head("logistic", "logistic", float(est.intercept_[0]), {"mean": mean, "scale": scale,
                                                                        "coef": est.coef_[0].astype(np.float64)})
    est = Ridge(alpha=1.0).fit(Z, y, sample_weight=w)
    return Head("logistic", "identity", float(est.intercept_), {"mean": mean, "scale": scale,
                                                                  "coef": np.asarray(est.coef_, np.float64)})


def _isotonic(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict | None:
    from sklearn.isotonic import IsotonicRegression

    if len(set(y.tolist())) < 2:
        return None
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y.astype(float), sample_weight=w)
    return {"x": np.asarray(iso.X_thresholds_, np.float64), "y": np.asarray(iso.y_thresholds_, np.float64)}


def crossfit_calibrated(p: np.ndarray, y: np.ndarray, w: np.ndarray, fold_of: np.ndarray) -> np.ndarray:
    """Out-of-fold predictions `p` calibrated without seeing their own fold: each fold's through the isotonic map
    fitted on the other folds (a map fitted on all of them and scored on the same rows is optimistic)."""
    out = np.array(p, dtype=np.float64, copy=True)
    for k in np.unique(fold_of):
        te = fold_of == k
        m = _isotonic(p[~te], y[~te], w[~te])
        if m is not None:
            out[te] = np.interp(p[te], m["x"], m["y"])
    return out


# -- the whole fit ----------------------------------------------------------------------------------------
def fit_rows(rows, settings: FitSettings | None = None, progress: bool = False) -> tuple[RiskModel, dict]:
    """(model, cross-validation report) from training rows (kdel.risk.data.Rows)."""
    from kdel.risk.metrics import binary_metrics, regression_metrics

    s = settings or FitSettings()
    s.validate()
    if rows.n_cases == 0 or len(rows.X) == 0:
        raise UserError("no training rows: the audits have no usable cases")
    groups_case = np.asarray(rows.group, dtype=object)
    case_folds = grouped_folds(groups_case, s.folds)
    y_flip = rows.flipped.astype(bool)
    idx, w = subsample(y_flip, s.max_rows, s.seed)
    X, yf, yd, case_of = rows.X[idx], y_flip[idx], rows.p_drop[idx], rows.case[idx]
    CX = np.asarray(rows.case_x, dtype=np.float64)
    ys = np.asarray(rows.success, dtype=bool)

    oof_flip, oof_drop = np.zeros(len(idx)), np.zeros(len(idx))
    oof_succ = np.zeros(rows.n_cases)
    fold_of = np.zeros(len(idx), dtype=np.int64)
    folds_record = []
    for k, (tr_c, te_c) in enumerate(case_folds):
        tr = np.isin(case_of, tr_c)
        te = np.isin(case_of, te_c)
        folds_record.append({"train_groups": len(set(groups_case[tr_c].tolist())),
                             "test_groups": len(set(groups_case[te_c].tolist())), "test_cases": len(te_c)})
        fold_of[te] = k
        oof_flip[te] = _fit_head(X[tr], yf[tr], w[tr], True, s).predict(X[te], calibrated=False)
        oof_drop[te] = _fit_head(X[tr], yd[tr], w[tr], False, s).predict(X[te])
        oof_succ[te_c] = _fit_head(CX[tr_c], ys[tr_c], np.ones(len(tr_c)), True, s, small=True).predict(
            CX[te_c], calibrated=False)
        if progress:
            print(f"fold {k + 1}/{len(case_folds)} done", flush=True)

    flip = _fit_head(X, yf, w, True, s)
    flip.calibration = _isotonic(oof_flip, yf, w)
    drop = _fit_head(X, yd, w, False, s)
    succ = _fit_head(CX, ys, np.ones(len(ys)), True, s, small=True)
    succ.calibration = _isotonic(oof_succ, ys, np.ones(len(ys)))
    cal_flip = crossfit_calibrated(oof_flip, yf, w, fold_of)
    report = {
        "folds": folds_record,
        "flip": binary_metrics(yf, oof_flip, w),
        "flip_calibrated_brier": float(np.average((cal_flip - yf) ** 2, weights=w)),  # cross-fitted
        "p_drop": regression_metrics(yd, oof_drop, w),
        "success": binary_metrics(ys, oof_succ, np.ones(len(ys))),
    }
    training = {
        "settings": s.__dict__ | {},
        "n_cases": rows.n_cases,
        "n_rows": int(len(rows.X)),
        "n_rows_used": int(len(idx)),
        "n_flipped": int(y_flip.sum()),
        "n_groups": len(set(groups_case.tolist())),
        "cv": report,
    }
    return RiskModel(heads={"flip": flip, "p_drop": drop, "success": succ}, training=training), report
