"""The learned risk predictor: grouped CV keeps subjects apart, the JSON model equals scikit-learn's and loads
without running code, and bad model files are refused with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdel.errors import UserError
from kdel.risk.data import Rows
from kdel.risk.features import CASE_FEATURES, FEATURES


def planted_model(path, n_cases: int = 12):
    """A small gbdt risk model fitted on planted rows, saved to `path` (for CLI tests)."""
    from kdel.risk.fit import FitSettings, fit_rows

    model, _ = fit_rows(planted_rows(n_cases=n_cases), FitSettings(n_estimators=5, folds=2))
    model.save(path)
    return path


def planted_rows(n_cases: int = 40, per_case: int = 60, seed: int = 0) -> Rows:
    """Rows whose flip label depends on kappa_site and shared_subject, p drop on kappa, success on layer_frac."""
    rng = np.random.default_rng(seed)
    ki, si = FEATURES.index("kappa_site"), FEATURES.index("shared_subject")
    li = CASE_FEATURES.index("layer_frac")
    parts = []
    for c in range(n_cases):
        cx = rng.normal(size=len(CASE_FEATURES))
        cx[li] = rng.uniform()
        X = rng.normal(size=(per_case, len(FEATURES)))
        X[:, si] = rng.uniform(size=per_case) < 0.2
        X[:, len(FEATURES) - len(CASE_FEATURES):] = cx
        logit = 3 * X[:, ki] + 2 * X[:, si] - 3
        flipped = rng.uniform(size=per_case) < 1 / (1 + np.exp(-logit))
        r = Rows()
        r.X, r.flipped = X, flipped
        r.p_drop = 0.2 * np.tanh(X[:, ki]) + 0.01 * rng.normal(size=per_case)
        r.fact_id = np.arange(per_case)
        r.case = np.zeros(per_case, np.int64)
        r.unrelated = np.zeros(per_case, bool)
        r.probe_group = np.array(["other"] * per_case, dtype=object)
        r.case_x, r.group = [cx], [f"kg:subject{c % 13}"]
        r.success, r.wrecked = [bool(cx[li] > 0.4)], [False]
        r.collateral, r.n_flipped, r.meta = [float(r.p_drop.mean())], [int(flipped.sum())], [{}]
        parts.append(r)
    return Rows.concat(parts)


def test_grouped_folds_never_share_a_subject():
    from kdel.risk.fit import grouped_folds

    rng = np.random.default_rng(1)
    groups = [f"g{int(x)}" for x in rng.integers(0, 17, size=300)]
    folds = grouped_folds(groups, 5)
    assert len(folds) == 5
    seen = []
    for tr, te in folds:
        train_g = {groups[i] for i in tr}
        test_g = {groups[i] for i in te}
        assert not train_g & test_g
        assert len(tr) + len(te) == len(groups)
        seen += list(te)
    assert sorted(seen) == list(range(len(groups)))  # every row tested exactly once
    with pytest.raises(UserError, match="at least 2 subjects"):
        grouped_folds(["a"] * 10, 5)


def test_fit_learns_planted_signal_and_records_grouped_cv():
    from kdel.risk.fit import FitSettings, fit_rows

    rows = planted_rows()
    model, report = fit_rows(rows, FitSettings(n_estimators=25, folds=3))
    assert report["flip"]["auroc"] > 0.8
    assert report["p_drop"]["r2"] > 0.5
    assert report["success"]["auroc"] > 0.7
    assert model.training["n_groups"] == 13 and len(report["folds"]) == 3
    # the flip head ranks by the planted features, calibrated probabilities stay in [0, 1]
    p = model.flip_probability(rows.X)
    assert 0 <= p.min() and p.max() <= 1
    ki = FEATURES.index("kappa_site")
    assert p[rows.X[:, ki] > 1].mean() > p[rows.X[:, ki] < -1].mean() + 0.3


def test_exported_trees_equal_scikit_learn():
    from sklearn.ensemble import GradientBoostingClassifier

    from kdel.risk.fit import _export_trees
    from kdel.risk.model import Head

    rows = planted_rows(n_cases=10)
    est = GradientBoostingClassifier(init="zero", n_estimators=30, max_depth=3, random_state=0)
    est.fit(rows.X, rows.flipped)
    head = Head("gbdt", "logistic", 0.0, _export_trees(est))
    np.testing.assert_allclose(head.raw(rows.X), est.decision_function(rows.X), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(head.predict(rows.X), est.predict_proba(rows.X)[:, 1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["gbdt", "logistic"])
def test_json_model_round_trips_without_code_execution(tmp_path, kind):
    """Saved, then loaded in a fresh interpreter where scikit-learn and pickle cannot be imported: the same
    predictions (the file is numbers; nothing is unpickled or imported to use it)."""
    from kdel.risk.fit import FitSettings, fit_rows
    from kdel.risk.model import load_risk_model

    rows = planted_rows(n_cases=20)
    model, _ = fit_rows(rows, FitSettings(kind=kind, n_estimators=10, folds=2))
    path = tmp_path / "risk_model.json"
    model.save(path)
    json.loads(path.read_text())  # plain JSON
    loaded = load_risk_model(path)
    np.testing.assert_allclose(loaded.flip_probability(rows.X), model.flip_probability(rows.X), rtol=0, atol=1e-12)
    np.save(tmp_path / "X.npy", rows.X)
    code = (
        "import sys, numpy as np\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('sklearn', 'pickle', 'joblib', 'torch'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from kdel.risk.model import load_risk_model\n"
        f"m = load_risk_model({str(path)!r})\n"
        f"X = np.load({str(tmp_path / 'X.npy')!r}, allow_pickle=False)\n"
        f"np.save({str(tmp_path / 'p.npy')!r}, np.stack([m.flip_probability(X), m.p_drop(X)]))\n"
    )
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    got = np.load(tmp_path / "p.npy")
    np.testing.assert_allclose(got[0], model.flip_probability(rows.X), atol=1e-12)
    np.testing.assert_allclose(got[1], model.p_drop(rows.X), atol=1e-12)


def test_bad_model_files_are_refused_with_one_line(tmp_path):
    from kdel.risk.fit import FitSettings, fit_rows
    from kdel.risk.model import load_risk_model

    model, _ = fit_rows(planted_rows(n_cases=12), FitSettings(n_estimators=5, folds=2))
    good = model.to_json()

    def write(d, name):
        p = tmp_path / name
        p.write_text(json.dumps(d) if not isinstance(d, str) else d)
        return p

    other = dict(good, feature_version=good["feature_version"] + 1)
    with pytest.raises(UserError, match="feature version") as e:
        load_risk_model(write(other, "v.json"))
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="not JSON"):
        load_risk_model(write("{not json", "bad.json"))
    with pytest.raises(UserError, match="format"):
        load_risk_model(write(dict(good, format="pickle"), "f.json"))
    broken = json.loads(json.dumps(good))
    broken["heads"]["flip"]["trees"][0]["left"][0] = 0  # a node pointing at itself: a cycle
    with pytest.raises(UserError, match="out of range"):
        load_risk_model(write(broken, "cycle.json"))
    with pytest.raises(UserError, match="does not exist"):
        load_risk_model(tmp_path / "missing.json")


def test_calibrated_brier_is_cross_fitted():
    """Each fold is calibrated by the isotonic map of the other folds (checked by hand); on predictions that
    carry no signal, the map fitted on all rows and scored on them looks better than it is, the cross-fitted
    one does not."""
    from kdel.risk.fit import _isotonic, crossfit_calibrated

    rng = np.random.default_rng(0)
    p = rng.uniform(size=400)
    y = rng.uniform(size=400) < 0.3  # independent of p
    w = np.ones(400)
    fold_of = np.arange(400) % 4
    got = crossfit_calibrated(p, y, w, fold_of)
    for k in range(4):
        m = _isotonic(p[fold_of != k], y[fold_of != k], w[fold_of != k])
        np.testing.assert_allclose(got[fold_of == k], np.interp(p[fold_of == k], m["x"], m["y"]))
    m = _isotonic(p, y, w)
    in_sample = np.mean((np.interp(p, m["x"], m["y"]) - y) ** 2)
    crossfit = np.mean((got - y) ** 2)
    constant = np.mean((y.mean() - y) ** 2)  # the best a signal-free predictor can honestly do
    assert in_sample < constant < crossfit
