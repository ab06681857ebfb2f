"""`--corpus FILE|self:N` in delete and audit: accepted with --kg and --facts, checked before anything is written,
resolved once (every audit worker edits with the same text), recorded as its spec with hash and token counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdel.cli.main import main
from tests import fixtures_real as fr

CACHE = Path(__file__).resolve().parents[2] / ".pytest_cache" / "kdel-real-models"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDEL_CACHE_DIR", str(tmp_path / "kdel-cache"))


@pytest.fixture(scope="module")
def llama() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return fr.cached_real_model("llama", CACHE).path


def _run(capsys, *args):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_corpus_file_with_a_kg(trained_model_dir, tiny_kg_dir, tmp_path, capsys):
    corpus = tmp_path / "text.txt"
    kg_lines = (Path(tiny_kg_dir) / "corpus.txt").read_text().splitlines()
    corpus.write_text("\n".join(kg_lines[:60]) + "\n")
    hp = tmp_path / "hp.yaml"
    hp.write_text("steps: 3\nn_prefixes: 1\n")
    out = tmp_path / "edited"
    code, _, err = _run(capsys, "delete", "--model", trained_model_dir, "--kg", tiny_kg_dir, "--fact", 3,
                        "--layer", 2, "--site", "last", "--method", "r-rome", "--corpus", corpus, "--hparams", hp,
                        "--out", out)
    assert code == 0, err
    record = json.loads((out / "edit.json").read_text())
    assert record["corpus"]["source"] == "file" and record["corpus"]["spec"] == str(corpus.resolve())
    assert record["corpus"]["lines"] == 60 and record["corpus"]["key_lines"] == 54
    info = record["records"][0]["info"]
    assert info["cov_corpus"]["sha256"] == record["corpus"]["sha256"] and info["cov_tokens"] == record["corpus"]["tokens"]
    assert "fewer than 10 x d" in err  # 60 lines of the toy corpus: far below 10 x 512 tokens


@pytest.mark.parametrize("spec, needle", [("self:abc", "self:N needs a positive whole number"),
                                          ("self:0", "self:N needs a positive whole number"),
                                          ("missing.txt", "corpus file missing.txt does not exist")])
@pytest.mark.parametrize("stage", ["delete", "audit"])
def test_bad_corpus_fails_before_writing(llama, tmp_path, capsys, monkeypatch, spec, needle, stage):
    monkeypatch.chdir(tmp_path)
    facts = fr.write_facts(tmp_path / "facts.jsonl", fr.fact_rows())
    extra = ["--fact", 0] if stage == "delete" else ["--quiet"]
    code, _, err = _run(capsys, stage, "--model", llama, "--facts", facts, "--corpus", spec, "--out", tmp_path / "o",
                        *extra)
    assert code == 2 and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_audit_workers_edit_with_the_parents_sampled_corpus(llama, tmp_path, capsys):
    facts = fr.write_facts(tmp_path / "facts.jsonl", fr.fact_rows())
    hp = tmp_path / "hp.yaml"
    hp.write_text("steps: 3\nn_prefixes: 1\n")
    out = tmp_path / "audit"
    code, _, err = _run(capsys, "audit", "--model", llama, "--facts", facts, "--corpus", "self:600", "--out", out,
                        "--per-bin", 1, "--bins", 2, "--sites", "last", "--layers", 1, "--workers", 2,
                        "--no-tracing-effect", "--no-fluency", "--hparams", hp, "--quiet")
    assert code == 0, err
    config = json.loads((out / "audit_config.json").read_text())
    sha = config["corpus_info"]["sha256"]
    assert config["corpus"] == "self:600" and config["inputs"]["corpus"] == f"self:600:{sha}"
    assert (out / "corpus.txt").read_text().splitlines() and list((out / "cache" / "keystats").glob("*"))
    cases = [json.loads(p.read_text()) for p in sorted((out / "cases").glob("*.json"))]
    assert len({c["worker"]["pid"] for c in cases}) == 2
    for c in cases:
        assert c["edit"]["info"]["cov_corpus"]["sha256"] == sha and c["timing"]["cov_cache"] == ["disk"]
