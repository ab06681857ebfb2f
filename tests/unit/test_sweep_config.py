"""`kdel sweep` config: validation (bad keys exit 2 with one line naming the key) and grid expansion."""

from __future__ import annotations

import textwrap

import pytest

BASE = """
name: t
seeds: 2
defaults: {entities: 30, relations: auto, sites: [last], per_bin: 1, bins: 3}
conditions:
  - name: rome
    vary: {topology: [ba, er]}
  - name: rrome
    methods: [r-rome]
    seeds: [0, 5]
    vary: {topology: [ba, er, powerlaw]}
    exponent: 2.2
analyses: {hase: false}
"""


def _write(tmp_path, text: str, name: str = "c.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def test_parse_expands_vary_seeds_and_defaults(tmp_path):
    from kdel.sweep.config import load_config

    cfg = load_config(_write(tmp_path, BASE))
    names = [c.name for c in cfg.conditions]
    assert names == ["rome-ba", "rome-er", "rrome-ba", "rrome-er", "rrome-powerlaw"]
    rome_ba = cfg.condition("rome-ba")
    assert rome_ba.seeds == (0, 1) and rome_ba.entities == 30 and rome_ba.relations == "auto"
    assert rome_ba.sites == ("last",) and rome_ba.methods == ("rome",) and rome_ba.varied == (("topology", "ba"),)
    assert cfg.condition("rrome-er").seeds == (0, 5) and cfg.condition("rrome-er").methods == ("r-rome",)
    assert cfg.analyses.hase is False and cfg.analyses.popularity is True
    assert cfg.to_json()["conditions"][0]["name"] == "rome-ba"


def test_grid_shares_kgs_and_models_between_conditions(tmp_path):
    from kdel.sweep.config import load_config
    from kdel.sweep.grid import expand

    cfg = load_config(_write(tmp_path, BASE))
    plan = expand(cfg)
    assert len(plan.cells) == 2 * 2 + 3 * 2
    # rome and r-rome on BA seed 0 read the same KG and model, but not the same audit
    a = next(c for c in plan.cells if (c.condition, c.seed) == ("rome-ba", 0))
    b = next(c for c in plan.cells if (c.condition, c.seed) == ("rrome-ba", 0))
    assert (a.kg, a.model) == (b.kg, b.model) and a.audit != b.audit
    # the exponent only matters for the power-law graph: BA with exponent 2.2 is the default BA
    assert plan.jobs[f"kg:{a.kg}"].inputs["kg"]["exponent"] == 2.5
    pl = next(c for c in plan.cells if c.condition == "rrome-powerlaw")
    assert plan.jobs[f"kg:{pl.kg}"].inputs["kg"]["exponent"] == 2.2
    # seeds: distinct KGs; the model's training seed and the audit's sampling seed are the cell's
    s5 = next(c for c in plan.cells if (c.condition, c.seed) == ("rrome-ba", 5))
    assert s5.kg != b.kg and plan.jobs[f"model:{s5.model}"].inputs["train"]["seed"] == 5
    assert plan.jobs[f"audit:{s5.audit}"].inputs["audit"]["seed"] == 5
    # distinct KGs: rome-{ba,er} x {0,1} + rrome-{ba,er,powerlaw} x {0,5} minus the shared (ba|er, 0)
    assert plan.counts() == {"kg": 8, "model": 8, "audit": 10}
    # every job's dependencies come before it; keys are stable
    seen = set()
    for jid, j in plan.jobs.items():
        assert all(d in seen for d in j.deps)
        seen.add(jid)
    assert [c.audit for c in expand(load_config(_write(tmp_path, BASE, "d.yaml"))).cells] == [c.audit for c in plan.cells]


def test_comparison_pairs_siblings_that_differ_only_in_topology(tmp_path):
    from kdel.sweep.analyses import comparison_pairs
    from kdel.sweep.config import load_config

    cfg = load_config(_write(tmp_path, BASE))
    pairs = [(a.name, b.name) for a, b in comparison_pairs(cfg.conditions, "er")]
    assert pairs == [("rome-ba", "rome-er"), ("rrome-ba", "rrome-er"), ("rrome-powerlaw", "rrome-er")]


BAD = [
    ("topolgy: ba", "conditions[0].topolgy: unknown key"),
    ("topology: tree", "conditions[0].topology: must be one of ba, er, powerlaw"),
    ("sites: [middle]", "conditions[0].sites[0]: must be one of subject_last, last"),
    ("methods: [rome, nope]", "conditions[0].methods[1]: must be one of"),
    ("entities: many", "conditions[0].entities: must be an integer"),
    ("layers: [1, -1]", "conditions[0].layers[1]: must be >= 0"),
    ("seeds: 0", "conditions[0].seeds: a seed count must be between 1"),
    ("seeds: [1, 1]", "conditions[0].seeds: names a seed twice"),
    ("hparams: {ft: {lr: 1}}", "conditions[0].hparams.ft: hyperparameters for a method not in methods"),
    ("hparams: {rome: {no_such: 1}}", "conditions[0].hparams.rome:"),
    ("vary: {topology: ba}", "conditions[0].vary.topology: must be a non-empty list"),
    ("vary: {colour: [red]}", "conditions[0].vary.colour: unknown condition key"),
]


@pytest.mark.parametrize("line,message", BAD)
def test_bad_condition_keys_exit_2_with_one_line_naming_the_key(tmp_path, capsys, line, message):
    from kdel.cli.main import main

    cfg = _write(tmp_path, f"name: t\nseeds: 2\nconditions:\n  - name: c\n    {line}\n")
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("kdel: error: ") and message in err, err
    assert f"{cfg}:" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text,message", [
    ("name: t\nseeds: 2\n", "conditions: must be a non-empty list"),
    ("name: t\nconditions: [{name: c}]\n", "conditions[0].seeds: no seeds"),
    ("seeds: 2\nconditions: [{name: c}]\n", "name: must be a non-empty string"),
    ("name: t\nseeds: 2\nconditions: [{name: c}, {name: c}]\n", "two conditions are named 'c'"),
    ("name: t\nseeds: 2\nextra: 1\nconditions: [{name: c}]\n", "extra: unknown key"),
    ("name: t\nseeds: 2\ndefaults: {sitez: [last]}\nconditions: [{name: c}]\n", "defaults.sitez: unknown key"),
    ("name: t\nseeds: 2\nn_boot: 5\nconditions: [{name: c}]\n", "n_boot: must be >= 100"),
    ("name: t\nseeds: 2\nanalyses: {popularity: {metrics: [nope]}}\nconditions: [{name: c}]\n",
     "analyses.popularity.metrics[0]: must be one of"),
    ("name: t\nseeds: 2\nconditions: [{name: c}\n", "not valid YAML"),
    ("- just a list\n", "the config: must be a mapping"),
])
def test_bad_top_level_configs(tmp_path, capsys, text, message):
    from kdel.cli.main import main

    cfg = _write(tmp_path, text)
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err


def test_missing_config_and_refused_out(tmp_path, capsys):
    from kdel.cli.main import main

    assert main(["sweep", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    cfg = _write(tmp_path, BASE)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["sweep", str(cfg), "--out", str(other)]) == 2
    assert "not a kdel sweep directory" in capsys.readouterr().err
    assert main(["sweep", str(cfg), "--out", str(tmp_path)]) == 2  # the config lies inside --out
    assert "input" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "mine"
