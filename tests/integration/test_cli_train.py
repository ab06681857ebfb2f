"""`kdel train` from the command line: a short run writes a loadable model dir; bad input exits 2."""

from __future__ import annotations

import json

import pytest
import torch

from kdel.cli.main import main


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("kdel: error:") and "\n" not in err, err
    return err


def test_cli_train_short_run_writes_model_dir(tiny_kg_dir, tmp_path, capsys):
    out = tmp_path / "model"
    rc = main(["train", "--kg", str(tiny_kg_dir), "--out", str(out), "--max-steps", "3", "--quiet", "--seed", "1"])
    assert rc == 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "kdel_model.json", "train_report.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "train_report.json").read_text())
    assert report["steps"] == 3 and report["reached_target"] is False and report["seed"] == 1
    assert "did NOT reach" in capsys.readouterr().out
    assert not list(tmp_path.glob(".model.*"))  # no staging directory left behind


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--preset", "huge"], "unknown preset"),
        (["--target-recall", "0"], "--target-recall"),
        (["--threads", "0"], "--threads"),
    ],
)
def test_cli_train_bad_flags(tiny_kg_dir, tmp_path, capsys, extra, expected):
    rc = main(["train", "--kg", str(tiny_kg_dir), "--out", str(tmp_path / "m"), "--quiet", *extra])
    assert rc == 2
    assert expected in _one_error_line(capsys)
    assert not (tmp_path / "m").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_train_cuda_without_cuda(tiny_kg_dir, tmp_path, capsys):
    rc = main(["train", "--kg", str(tiny_kg_dir), "--out", str(tmp_path / "m"), "--device", "cuda"])
    assert rc == 2
    assert "CUDA is not available" in _one_error_line(capsys)


def test_cli_train_missing_and_broken_kg(tmp_path, capsys):
    rc = main(["train", "--kg", str(tmp_path / "nope"), "--out", str(tmp_path / "m")])
    assert rc == 2 and "does not exist" in _one_error_line(capsys)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "kg.json").write_text("{not json")
    rc = main(["train", "--kg", str(broken), "--out", str(tmp_path / "m")])
    assert rc == 2 and str(broken) in _one_error_line(capsys)
    a_file = tmp_path / "kg_file"
    a_file.write_text("x")
    rc = main(["train", "--kg", str(a_file), "--out", str(tmp_path / "m")])
    assert rc == 2 and "not a directory" in _one_error_line(capsys)


def test_cli_train_out_is_existing_file(tiny_kg_dir, tmp_path, capsys):
    target = tmp_path / "model.txt"
    target.write_text("keep me")
    rc = main(["train", "--kg", str(tiny_kg_dir), "--out", str(target), "--quiet"])
    assert rc == 2 and "is a file" in _one_error_line(capsys)
    assert target.read_text() == "keep me"
