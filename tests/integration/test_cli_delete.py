"""`kdel delete`: writes a loadable edited model + edit.json; bad input exits 2 with one clear line."""

from __future__ import annotations

import json

import pytest

from kdel.cli.main import main


@pytest.fixture
def facts_file(tmp_path):
    from tests.unit.test_rome_helpers import FACTS

    path = tmp_path / "facts.jsonl"
    rows = [{"subject": f.subject, "prompt": f.prompt, "target": f.target, "relation": f.relation} for f in FACTS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(capsys, args):
    code = main(["delete", *map(str, args)])
    return code, capsys.readouterr()


def test_delete_writes_loadable_model_and_record(random_model_dir, facts_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KDEL_CACHE_DIR", str(tmp_path / "cache"))
    model_dir = random_model_dir("gpt2")
    out = tmp_path / "edited"
    hp = tmp_path / "hp.yaml"
    hp.write_text("steps: 3\nn_prefixes: 1\n")
    code, cap = _run(capsys, ["--model", model_dir, "--facts", facts_file, "--fact", 0, "--fact", 3,
                              "--method", "r-rome", "--objective", "erase", "--layer", 1, "--site", "last",
                              "--hparams", hp, "--out", out])
    assert code == 0, cap.err
    assert "thin" in cap.err  # no --corpus: warned
    record = json.loads((out / "edit.json").read_text())
    assert record["method"] == "r-rome" and record["layers"] == [1] and record["hparams"]["steps"] == 3
    assert [f["fact_id"] for f in record["facts"]] == [0, 3]
    assert record["total_delta_norm"] > 0 and record["records"][0]["info"]["cov_tokens"] > 0
    assert list((tmp_path / "cache" / "keystats").glob("*.safetensors"))
    from transformers import AutoModelForCausalLM

    from kdel.models.loading import load_model

    edited, _ = load_model(out)
    original = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    name = "transformer.h.1.mlp.c_proj.weight"
    assert not (edited.get_parameter(name) == original.get_parameter(name)).all()
    assert (edited.get_parameter("transformer.h.0.mlp.c_proj.weight") == original.get_parameter("transformer.h.0.mlp.c_proj.weight")).all()


def test_delete_on_kg_sequential(trained_model_dir, tiny_kg_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KDEL_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "edited"
    code, cap = _run(capsys, ["--model", trained_model_dir, "--kg", tiny_kg_dir, "--fact", 3, "--fact", 5,
                              "--method", "r-rome", "--site", "last", "--layer", 2, "--sequential", "--out", out])
    assert code == 0, cap.err
    record = json.loads((out / "edit.json").read_text())
    assert record["sequential"] and len(record["records"]) == 2
    assert record["efficacy"] == 1.0  # both facts erased on the saved, edited model
    assert (out / "kdel_model.json").exists()
    assert "2/2 facts succeeded" in cap.out


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--method", "nope"], "unknown method 'nope'"),
        (["--objective", "nope"], "unknown objective 'nope'"),
        (["--layer", "7"], "layer 7 is out of range"),
        (["--fact", "99"], "fact 99 does not exist"),
        (["--objective", "replace", "--target", "John Smith"], "is the fact's own object"),
        (["--site", "middle"], "unknown edit site"),
        (["--hparams", "BADYAML"], "unknown hyperparameter 'lrr'"),
    ],
)
def test_bad_input_exits_2_with_one_line(random_model_dir, facts_file, tmp_path, capsys, extra, needle):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lrr: 0.1\n")
    extra = [str(bad) if e == "BADYAML" else e for e in extra]
    args = ["--model", random_model_dir("gpt2"), "--facts", facts_file, "--fact", 0, "--out", tmp_path / "o"]
    code, cap = _run(capsys, [*args, *extra])
    assert code == 2
    lines = [ln for ln in cap.err.splitlines() if ln.startswith("kdel: error:")]
    assert len(lines) == 1 and needle in lines[0], cap.err
    assert not (tmp_path / "o").exists()


def test_fact_id_not_in_kg(trained_model_dir, tiny_kg_dir, tmp_path, capsys):
    code, cap = _run(capsys, ["--model", trained_model_dir, "--kg", tiny_kg_dir, "--fact", 100000,
                              "--out", tmp_path / "o"])
    assert code == 2 and "fact 100000 does not exist" in cap.err
