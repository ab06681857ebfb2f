"""The learned risk predictor, stored as data: a JSON file of numbers, evaluated here with numpy.

Loading parses JSON and checks shapes; nothing is unpickled, imported or executed (scikit-learn is needed to
fit a model, never to load or use one). Format `kdel-risk-model/1`:

  {"format", "feature_version", "features": [...], "case_features": [...],
   "heads": {"flip": HEAD, "p_drop": HEAD, "success": HEAD},   # success: inputs are the case features
   "training": {...}, "provenance": {...}}
  HEAD = {"kind": "gbdt" | "logistic", "link": "logistic" | "identity", "init": float,
          gbdt:     "learning_rate", "trees": [{"feature", "threshold", "left", "right", "value"}]
          logistic: "mean", "scale", "coef"  (standardised inputs; "init" is the intercept)
          "calibration": {"x": [...], "y": [...]} | null}   # isotonic map of the raw probability

A gbdt tree sends x left when x[feature] <= threshold (features compared in float32, as scikit-learn's trees
do); a leaf has left = -1 and holds its value. raw = init + learning_rate · Σ leaf values (gbdt) or
init + coef · (x − mean) / scale (logistic); the logistic link maps raw to a probability, which the
calibration map (piecewise linear, clipped at its ends) turns into the calibrated probability.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdel.errors import UserError
from kdel.risk.names import CASE_FEATURES, FEATURE_VERSION, FEATURES

MODEL_FORMAT = "kdel-risk-model/1"
HEADS = ("flip", "p_drop", "success")


@dataclass
class Head:
    kind: str
    link: str
    init: float
    params: dict
    calibration: dict | None = None

    def raw(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if self.kind == "logistic":
            z = (X - self.params["mean"]) / self.params["scale"]
            return self.init + z @ self.params["coef"]
        out = np.full(len(X), self.init, dtype=np.float64)
        X32 = X.astype(np.float32)
        lr = self.params["learning_rate"]
        for tree in self.params["trees"]:
            out += lr * _tree_predict(tree, X32)
        return out

    def predict(self, X: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """Probability (logistic link, calibrated when a map is stored) or value (identity link)."""
        r = self.raw(X)
        if self.link == "identity":
            return r
        p = 1.0 / (1.0 + np.exp(-r))
        if calibrated and self.calibration is not None:
            p = np.interp(p, self.calibration["x"], self.calibration["y"])
        return p

    def to_json(self) -> dict:
        params = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.params.items()}
        if "trees" in params:
            params["trees"] = [{k: np.asarray(v).tolist() for k, v in t.items()} for t in params["trees"]]
        cal = None if self.calibration is None else {k: np.asarray(v, np.float64).tolist()
                                                     for k, v in self.calibration.items()}
        return {"kind": self.kind, "link": self.link, "init": float(self.init), **params, "calibration": cal}


def _tree_predict(tree: dict, X32: np.ndarray) -> np.ndarray:
    node = np.zeros(len(X32), dtype=np.int64)
    left, right, feat, thr, val = tree["left"], tree["right"], tree["feature"], tree["threshold"], tree["value"]
    active = left[node] >= 0
    rows = np.arange(len(X32))
    while active.any():
        idx = rows[active]
        nd = node[idx]
        go_left = X32[idx, feat[nd]] <= thr[nd]
        node[idx] = np.where(go_left, left[nd], right[nd])
        active[idx] = left[node[idx]] >= 0
    return val[node]


@dataclass
class RiskModel:
    heads: dict[str, Head]
    features: tuple[str, ...] = FEATURES
    case_features: tuple[str, ...] = CASE_FEATURES
    feature_version: int = FEATURE_VERSION
    training: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def flip_probability(self, X: np.ndarray) -> np.ndarray:
        return self.heads["flip"].predict(X)

    def p_drop(self, X: np.ndarray) -> np.ndarray:
        return self.heads["p_drop"].predict(X)

    def success_probability(self, case_x: np.ndarray) -> np.ndarray:
        return self.heads["success"].predict(np.atleast_2d(case_x))

    def to_json(self) -> dict:
        return {"format": MODEL_FORMAT, "feature_version": self.feature_version, "features": list(self.features),
                "case_features": list(self.case_features),
                "heads": {k: h.to_json() for k, h in self.heads.items()},
                "training": self.training, "provenance": self.provenance}

    def save(self, path) -> None:
        from kdel.io import atomic_write_json

        atomic_write_json(Path(path), self.to_json())


# -- loading: JSON only, every shape checked ---------------------------------------------------------
def _bad(path, why: str) -> UserError:
    return UserError(f"{path} is not a usable kdel risk model: {why}")


def _floats(path, x, n: int | None, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64) if isinstance(x, list) else None
    if a is None or a.ndim != 1 or (n is not None and len(a) != n) or not np.isfinite(a).all():
        raise _bad(path, f"{what} must be a list of {n if n is not None else ''} finite numbers".replace("  ", " "))
    return a


def _head(path, name: str, d: dict, n_features: int) -> Head:
    if not isinstance(d, dict) or d.get("kind") not in ("gbdt", "logistic") or d.get("link") not in ("logistic",
                                                                                                  "identity"):
        raise _bad(path, f"head {name!r} must have kind gbdt|logistic and link logistic|identity")
    init = d.get("init")
    if isinstance(init, bool) or not isinstance(init, (int, float)) or not math.isfinite(init):
        raise _bad(path, f"head {name!r}: init must be a finite number")
    if d["kind"] == "logistic":
        params = {k: _floats(path, d.get(k), n_features, f"head {name!r} {k}") for k in ("mean", "scale", "coef")}
        if (params["scale"] <= 0).any():
            raise _bad(path, f"head {name!r}: scale must be > 0")
    else:
        lr = d.get("learning_rate")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise _bad(path, f"head {name!r}: learning_rate must be > 0")
        trees = d.get("trees")
        if not isinstance(trees, list):
            raise _bad(path, f"head {name!r}: trees must be a list")
        params = {"learning_rate": float(lr), "trees": [_tree(path, name, t, n_features) for t in trees]}
    cal = d.get("calibration")
    if cal is not None:
        if not isinstance(cal, dict):
            raise _bad(path, f"head {name!r}: calibration must be an object or null")
        x = _floats(path, cal.get("x"), None, f"head {name!r} calibration x")
        y = _floats(path, cal.get("y"), len(x), f"head {name!r} calibration y")
        if len(x) < 1 or (np.diff(x) < 0).any():
            raise _bad(path, f"head {name!r}: calibration x must be non-empty and increasing")
        cal = {"x": x, "y": y}
    return Head(kind=d["kind"], link=d["link"], init=float(init), params=params, calibration=cal)


def _tree(path, name: str, t: dict, n_features: int) -> dict:
    if not isinstance(t, dict):
        raise _bad(path, f"head {name!r}: a tree must be an object")
    try:
        left = np.asarray(t["left"], dtype=np.int64)
        right = np.asarray(t["right"], dtype=np.int64)
        feat = np.asarray(t["feature"], dtype=np.int64)
        thr = np.asarray(t["threshold"], dtype=np.float64)
        val = np.asarray(t["value"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise _bad(path, f"head {name!r}: a tree needs integer left/right/feature and numeric threshold/value lists")
    n = len(left)
    if n == 0 or any(a.ndim != 1 or len(a) != n for a in (right, feat, thr, val)) or not np.isfinite(val).all():
        raise _bad(path, f"head {name!r}: a tree's arrays must be 1-D of one length")
    inner = left >= 0
    ok = ((left[inner] > np.flatnonzero(inner)).all() and (right[inner] > np.flatnonzero(inner)).all()
          and (left[inner] < n).all() and (right[inner] < n).all()
          and ((feat[inner] >= 0) & (feat[inner] < n_features)).all() and (right[~inner] < 0).all())
    if not ok:
        raise _bad(path, f"head {name!r}: a tree has node links or features out of range")
    return {"left": left, "right": right, "feature": np.where(inner, feat, 0), "threshold": thr, "value": val}


def load_risk_model(path) -> RiskModel:
    """Read a risk model file (JSON; refused with one line when it is not one, or is for other features)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"risk model {path} does not exist")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(path, f"not JSON ({type(e).__name__})") from None
    if not isinstance(d, dict) or d.get("format") != MODEL_FORMAT:
        raise _bad(path, f"format is {d.get('format') if isinstance(d, dict) else None!r}, expected {MODEL_FORMAT!r}")
    version = d.get("feature_version")
    if version != FEATURE_VERSION or d.get("features") != list(FEATURES) or d.get("case_features") != list(CASE_FEATURES):
        raise UserError(f"risk model {path} was fitted on feature version {version!r}; this kdel computes feature "
                        f"version {FEATURE_VERSION}: fit it again with `kdel risk fit`")
    heads = d.get("heads")
    if not isinstance(heads, dict) or set(heads) != set(HEADS):
        raise _bad(path, f"heads must be exactly {', '.join(HEADS)}")
    built = {name: _head(path, name, heads[name], len(CASE_FEATURES) if name == "success" else len(FEATURES))
             for name in HEADS}
    return RiskModel(heads=built, training=d.get("training") or {}, provenance=d.get("provenance") or {})


def is_risk_model_file(path) -> bool:
    """Whether `path` holds a file this module wrote (for the output rule)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get("format") == MODEL_FORMAT
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return False
