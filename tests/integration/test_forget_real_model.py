"""`kdel forget` on a model kdel did not train (`--facts`, `--corpus`): the entity's facts go, the fluency
check (generation entropy, held-out perplexity) runs before and after because the model is a real one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdel.cli.main import main
from tests import fixtures_real as fr

CACHE = Path(__file__).resolve().parents[2] / ".pytest_cache" / "kdel-real-models"


@pytest.mark.slow
def test_forget_a_person_in_a_real_model(tmp_path, monkeypatch):
    monkeypatch.setenv("KDEL_CACHE_DIR", str(tmp_path / "cache"))
    CACHE.mkdir(parents=True, exist_ok=True)
    model = fr.cached_real_model("gpt2", CACHE).path
    facts = fr.write_facts(tmp_path / "facts.jsonl", fr.fact_rows())
    corpus = fr.write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "forgot"
    code = main(["forget", "--model", str(model), "--facts", str(facts), "--corpus", str(corpus),
                 "--subject", "Maria Lopez", "--method", "ft", "--out", str(out), "--unrelated", "5"])
    assert code == 0
    rec = json.loads((out / "forget.json").read_text())
    assert rec["real_model"] and rec["mode"] == "batch" and rec["entity"]["id"] is None
    assert [f["subject"] for f in rec["facts"]] == ["Maria Lopez", "Maria Lopez"]
    flu = rec["side_effects"]["fluency"]
    assert flu is not None
    for k in ("fluency_before_entropy", "fluency_after_entropy", "fluency_before_perplexity",
              "fluency_after_perplexity", "fluency_ppl_ratio", "fluency_wrecked"):
        assert k in flu
    assert flu["fluency_before_perplexity"] > 1 and flu["fluency_after_perplexity"] > 1
    assert not (out / "kdel_model.json").exists()
    # fluency off by request
    out2 = tmp_path / "forgot2"
    assert main(["forget", "--model", str(model), "--facts", str(facts), "--corpus", str(corpus), "--subject",
                 "Maria Lopez", "--method", "ft", "--out", str(out2), "--fluency", "off", "--unrelated", "5"]) == 0
    assert json.loads((out2 / "forget.json").read_text())["side_effects"]["fluency"] is None
