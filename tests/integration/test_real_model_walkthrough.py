"""docs/real_models.md, run: a local HF model kdel did not train, a facts file, a `self:N` corpus, then
trace -> delete -> audit -> report through `kdel.cli.main.main`, with the defaults the walkthrough explains.

The model is a tiny Llama (4 layers, hidden 32, a SentencePiece-style BPE tokenizer with BOS) initialised at random
and fine-tuned for seconds on the 12 facts of tests/fixtures_real.py, saved with `save_pretrained` only (no
kdel_model.json): what a user's pretrained model looks like to kdel, at toy scale. To get the same files for the
docs' commands: `python -m tests.integration.test_real_model_walkthrough DIR` (writes DIR/model, DIR/facts.jsonl).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from kdel.cli.main import main
from tests import fixtures_real as fr

CACHE = Path(__file__).resolve().parents[2] / ".pytest_cache" / "kdel-real-models"
CORPUS = "self:2000"


def prepare(root: Path) -> tuple[Path, Path]:
    """ROOT/model (the fine-tuned tiny Llama, built once and cached) and ROOT/facts.jsonl."""
    CACHE.mkdir(parents=True, exist_ok=True)
    built = fr.cached_real_model("llama", CACHE).path
    model = root / "model"
    model.mkdir(parents=True)
    for p in built.iterdir():
        if p.name != "real_model.json":
            shutil.copyfile(p, model / p.name)
    return model, fr.write_facts(root / "facts.jsonl", fr.fact_rows())


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.mark.slow
def test_walkthrough(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KDEL_CACHE_DIR", str(tmp_path / "kdel-cache"))
    model, facts = prepare(tmp_path)
    assert not (model / "kdel_model.json").exists()

    # 1. trace: where each fact is looked up (MLP effects per layer and position)
    code, out, err = _run(capsys, "trace", "--model", model, "--facts", facts, "--out", tmp_path / "trace",
                          "--component", "mlp", "--limit", 4)
    assert code == 0, err
    assert json.loads((tmp_path / "trace" / "summary.json").read_text())["n_traced"] == 4

    # 2. delete without a corpus: thin key statistics, warned
    code, out, err = _run(capsys, "delete", "--model", model, "--facts", facts, "--fact", 0, "--out",
                          tmp_path / "thin")
    assert code == 0, err
    assert "facts' own prompts only" in err and "C is thin" in err
    thin = json.loads((tmp_path / "thin" / "edit.json").read_text())
    assert thin["corpus"]["source"] == "facts" and thin["records"][0]["info"]["cov_thin_corpus"]

    # 3. delete with the defaults (--layer auto --site auto) and text sampled from the model
    code, out, err = _run(capsys, "delete", "--model", model, "--facts", facts, "--fact", 0, "--corpus", CORPUS,
                          "--out", tmp_path / "edited")
    assert code == 0, err
    assert "thin" not in err and "fewer than" not in err  # 1840 tokens >= 10 x d = 1280: no corpus warning
    edit = json.loads((tmp_path / "edited" / "edit.json").read_text())
    pick = edit["layer_choice"]["facts"][0]["pick"]
    assert edit["layers"] == [pick["layer"]] and edit["site"] == pick["site"]
    assert pick["window"] == 1 and (pick["fallback"] or pick["effect"] >= 0.1)
    assert edit["corpus"]["spec"] == CORPUS and edit["corpus"]["seed"] == 0 and edit["corpus"]["tokens"] > 1280
    assert edit["efficacy"] == 1.0 and "(auto)" in out

    # 4. audit: layers and sites from evidence, fluency on (kdel did not train this model), self:N sampled once
    audit = tmp_path / "audit"
    args = ("audit", "--model", model, "--facts", facts, "--corpus", CORPUS, "--out", audit, "--per-bin", 1,
            "--bins", 2, "--quiet")
    code, out, err = _run(capsys, *args)
    assert code == 0, err
    config = json.loads((audit / "audit_config.json").read_text())
    assert config["corpus"] == CORPUS and config["config"]["fluency"] is True
    assert config["corpus_info"]["sha256"] == edit["corpus"]["sha256"]  # the same seeded sample as delete's
    assert len((audit / "corpus.txt").read_text().splitlines()) == config["corpus_info"]["lines"]
    cases = [json.loads(p.read_text()) for p in sorted((audit / "cases").glob("*.json"))]
    assert len(cases) == 4  # 2 targets x 2 sites
    for c in cases:
        assert c["status"] == "ok", c.get("error")
        assert c["trace"]["layer_choice"]["layer"] == c["spec"]["layer"]
        f = c["fluency"]
        assert f["perplexity_tokens"] > 0 and f["entropy_before"] > 0 and f["texts_after"]
        assert c["wrecked"] == bool(c["wrecked_by"])
    assert "0 run now" not in out
    # a rerun resamples the same corpus, so every case file is reused
    code, out, err = _run(capsys, *args)
    assert code == 0 and "; 0 run now" in out, err

    # 5. report
    code, out, err = _run(capsys, "report", audit)
    assert code == 0, err
    assert (audit / "report.html").stat().st_size > 1000


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "walkthrough")
    m, f = prepare(target)
    print(f"model: {m}\nfacts: {f}")
