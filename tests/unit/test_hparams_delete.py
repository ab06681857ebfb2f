"""Hyperparameter loading: defaults < YAML < overrides; unknown keys, wrong types and bad values are UserErrors."""

import pytest

from kdel.delete.hparams import load_hparams
from kdel.delete.memit import MemitHparams
from kdel.delete.rome import RomeHparams
from kdel.errors import UserError


def test_defaults_yaml_and_overrides(tmp_path):
    y = tmp_path / "hp.yaml"
    y.write_text("lr: 1\nsteps: 7\nkl_factor: 0.5\n")
    hp = load_hparams(RomeHparams, y, {"steps": 9})
    assert hp.lr == 1.0 and isinstance(hp.lr, float)  # int accepted for a float
    assert hp.steps == 9  # overrides win over the file
    assert hp.kl_factor == 0.5
    assert hp.clamp_factor == RomeHparams().clamp_factor
    assert load_hparams(MemitHparams).n_layers == MemitHparams().n_layers


@pytest.mark.parametrize(
    "text, needle",
    [
        ("lrr: 0.1\n", "unknown hyperparameter 'lrr'"),
        ("steps: 2.5\n", "'steps' must be an integer"),
        ("lr: fast\n", "'lr' must be a number"),
        ("steps: true\n", "'steps' must be an integer"),
        ("lr: -1\n", "lr must be > 0"),
        ("steps: 0\n", "steps must be >= 1"),
        ("[1, 2]\n", "must hold a mapping"),
        ("lr: [\n", "not valid YAML"),
    ],
)
def test_bad_yaml_is_one_line_user_error(tmp_path, text, needle):
    y = tmp_path / "hp.yaml"
    y.write_text(text)
    with pytest.raises(UserError) as e:
        load_hparams(RomeHparams, y)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file_and_bad_override():
    with pytest.raises(UserError, match="does not exist"):
        load_hparams(RomeHparams, "/nonexistent/hp.yaml")
    with pytest.raises(UserError, match="update_weight must be > 0"):
        load_hparams(MemitHparams, overrides={"update_weight": 0})


@pytest.mark.parametrize(
    "override, needle",
    [({"nullspace_threshold": 1.5}, "nullspace_threshold"), ({"l2": 0.0}, "l2 must be > 0"),
     ({"preserve": "keys"}, "preserve must be one of"), ({"n_layers": 0}, "n_layers")],
)
def test_bad_alphaedit_hparams(override, needle):
    from kdel.delete.alphaedit import AlphaEditHparams

    with pytest.raises(UserError, match=needle):
        load_hparams(AlphaEditHparams, overrides=override)
