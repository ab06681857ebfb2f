"""The real-model path end to end: `--model DIR --facts FILE.jsonl` on HF models kdel did not train.

The models (tests/fixtures_real.py) are tiny GPT-2 / Llama / GPT-NeoX configs with real-looking tokenizers
(byte-level BPE trained here, SentencePiece-style BPE with BOS, word level), fine-tuned in seconds on a
handful of facts and saved with `save_pretrained` only: no kdel_model.json. Every stage runs through
`kdel.cli.main.main`; bad inputs must exit 2 with one line on stderr and no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kdel.cli.main import main
from tests import fixtures_real as fr

CACHE = Path(__file__).resolve().parents[2] / ".pytest_cache" / "kdel-real-models"


@pytest.fixture(scope="module")
def real_model():
    """Factory: real_model(family) -> RealModel, built (or reused from the on-disk cache) once per family."""
    built: dict[str, fr.RealModel] = {}

    def get(family: str) -> fr.RealModel:
        if family not in built:
            CACHE.mkdir(parents=True, exist_ok=True)
            built[family] = fr.cached_real_model(family, CACHE)
        return built[family]

    return get


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("real-data")
    fr.write_facts(d / "facts.jsonl", fr.fact_rows())
    fr.write_facts(d / "facts_min.jsonl", fr.fact_rows(with_optional=False))
    fr.write_corpus(d / "corpus.txt")
    return d


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KDEL_CACHE_DIR", str(tmp_path / "kdel-cache"))  # key statistics stay in the test


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _assert_one_error_line(code: int, err: str, needle: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("kdel: error:"), err
    assert needle in lines[0], err


# -- the models themselves ----------------------------------------------------------------------------
@pytest.mark.parametrize("family", fr.FAMILIES)
def test_models_are_plain_hf_dirs_that_recall_the_facts(real_model, family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kdel.models.adapter import ModelAdapter
    from kdel.models.scoring import score_targets

    rm = real_model(family)
    assert not (rm.path / "kdel_model.json").exists()
    assert list(rm.path.glob("*.safetensors")) and not list(rm.path.glob("*.bin"))
    tok = AutoTokenizer.from_pretrained(str(rm.path))
    model = AutoModelForCausalLM.from_pretrained(str(rm.path))
    assert ModelAdapter(model, tok).arch.family == family
    rows = fr.fact_rows()
    s = score_targets(model, tok, [r["prompt"] for r in rows], [r["target"] for r in rows])
    assert s.recalled.mean() >= 0.9, s.recalled
    if family == "gpt2":  # space-sensitive BPE, as GPT-2's: the target's leading space matters
        assert tok(" Paris")["input_ids"] != tok("Paris")["input_ids"]
        assert s.n_target_tokens.max() > 1  # multi-token targets exist
        assert tok.pad_token is None  # like GPT-2: kdel must pad with something else


# -- trace ----------------------------------------------------------------------------------------------
def test_trace_gn_and_str_on_bpe_gpt2(real_model, data_dir, tmp_path, capsys):
    from kdel.trace import load_traces

    rm = real_model("gpt2")
    facts = data_dir / "facts.jsonl"
    out = tmp_path / "gn"
    code, _, err = _run(capsys, "trace", "--model", rm.path, "--facts", facts, "--out", out, "--fact", 0, "--fact", 6,
                        "--component", "mlp", "--component", "resid", "--noise-samples", 3)
    assert code == 0, err
    traces = load_traces(out)
    assert [t.fact_id for t in traces] == [0, 6]
    for t in traces:
        n_tokens = len(t.tokens)
        assert t.patched["mlp"]["prob"].shape == (rm.n_layers, n_tokens)
        assert t.clean["prob"] > t.corrupted["prob"]  # the noise hurt the fact
        # the subject's tokens are where the subject's text is (BPE: several tokens per name)
        assert t.subject_positions[0] == 0 and "".join(t.tokens[i] for i in t.subject_positions).replace("Ġ", " ") == t.subject
    # restoring the whole residual stream at the last position of the last layer restores the clean run
    last = traces[0]
    np.testing.assert_allclose(last.patched["resid"]["prob"][-1, -1], last.clean["prob"], rtol=1e-4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "facts" and summary["n_traced"] == 2

    out = tmp_path / "str"
    code, _, err = _run(capsys, "trace", "--model", rm.path, "--facts", facts, "--out", out, "--fact", 1,
                        "--corruption", "str", "--component", "mlp")
    assert code == 0, err
    (t,) = load_traces(out)
    assert t.config.corruption == "str" and t.partner_fact_id is not None and t.partner_fact_id != 1
    partner = fr.fact_rows()[t.partner_fact_id]
    assert partner["relation"] == "lives_in" and partner["subject"] in t.corrupted_prompt


def test_trace_str_without_relations_uses_any_fact(real_model, data_dir, tmp_path, capsys):
    from kdel.trace import load_traces

    rm = real_model("gpt_neox")
    out = tmp_path / "str"
    code, _, err = _run(capsys, "trace", "--model", rm.path, "--facts", data_dir / "facts_min.jsonl", "--out", out,
                        "--fact", 2, "--corruption", "str", "--component", "mlp", "--metric", "prob")
    assert code == 0, err
    (t,) = load_traces(out)
    assert t.partner_fact_id is not None and fr.fact_rows()[t.partner_fact_id]["target"] != "Berlin"


# -- delete ---------------------------------------------------------------------------------------------
def _delete(capsys, rm, data_dir, out, method="rome", fact=0, layer=1, site="last", facts="facts.jsonl", extra=()):
    return _run(capsys, "delete", "--model", rm.path, "--facts", data_dir / facts, "--fact", fact, "--method", method,
                "--objective", "erase", "--site", site, "--layer", layer, "--corpus", data_dir / "corpus.txt",
                "--out", out, *extra)


def _check_edited(rm, out, fact: int, method: str) -> dict:
    row = fr.fact_rows()[fact]
    record = json.loads((out / "edit.json").read_text())
    assert record["method"] == method and record["facts_source"] == "facts"
    assert not (out / "kdel_model.json").exists()  # nothing kdel-specific invented for a foreign model
    info = record["records"][0]["info"]
    if method in ("rome", "r-rome"):  # key statistics from --corpus: every corpus token counted
        assert info["cov_tokens"] > 0 and not info["cov_thin_corpus"]
    elif method == "memit":
        assert all(p["cov_tokens"] > 0 and not p["cov_thin_corpus"] for p in info["per_layer"])
    p_before = fr.target_prob(rm.path, row["prompt"], row["target"])
    p_after = fr.target_prob(out, row["prompt"], row["target"])  # plain AutoModelForCausalLM load
    assert p_after < p_before, (p_before, p_after)
    assert record["facts"][0]["p_before"] == pytest.approx(p_before, rel=1e-4)
    assert record["facts"][0]["p_after"] == pytest.approx(p_after, rel=1e-3, abs=1e-6)
    return record


@pytest.mark.parametrize("family", fr.FAMILIES)
def test_delete_rome_erase_each_family(real_model, data_dir, tmp_path, capsys, family):
    rm = real_model(family)
    out = tmp_path / "edited"
    code, stdout, err = _delete(capsys, rm, data_dir, out)
    assert code == 0, err
    assert "thin" not in err  # --corpus given: no thin-statistics warning
    record = _check_edited(rm, out, 0, "rome")
    assert record["efficacy"] == 1.0 and record["facts"][0]["recalled_after"] is False
    assert "1/1 facts succeeded" in stdout


@pytest.mark.parametrize("method", ["r-rome", "memit", "ft"])
def test_delete_other_methods_on_bpe_gpt2(real_model, data_dir, tmp_path, capsys, method):
    rm = real_model("gpt2")
    out = tmp_path / "edited"
    code, _, err = _delete(capsys, rm, data_dir, out, method=method, fact=3, layer=1)
    assert code == 0, err
    _check_edited(rm, out, 3, method)


def test_delete_subject_last_on_llama_with_bos(real_model, data_dir, tmp_path, capsys):
    """subject_last on a BOS-prepending SentencePiece-style tokenizer; the minimal facts file (no optional fields)."""
    rm = real_model("llama")
    out = tmp_path / "edited"
    code, _, err = _delete(capsys, rm, data_dir, out, fact=4, layer=1, site="subject_last", facts="facts_min.jsonl")
    assert code == 0, err
    _check_edited(rm, out, 4, "rome")


def test_delete_without_corpus_warns_thin(real_model, data_dir, tmp_path, capsys):
    rm = real_model("gpt_neox")
    code, _, err = _run(capsys, "delete", "--model", rm.path, "--facts", data_dir / "facts.jsonl", "--fact", 1,
                        "--site", "last", "--layer", 1, "--out", tmp_path / "e")
    assert code == 0, err
    assert "thin" in err and "Traceback" not in err


# -- audit ----------------------------------------------------------------------------------------------
def _audit(capsys, rm, data_dir, out, *extra):
    return _run(capsys, "audit", "--model", rm.path, "--facts", data_dir / "facts.jsonl",
                "--corpus", data_dir / "corpus.txt", "--out", out, "--methods", "rome", "--sites", "last",
                "--per-bin", 1, "--layers", 0, "--quiet", *extra)


def _check_audit(out: Path, n_facts: int) -> dict:
    from kdel.audit import validate_case

    cases = sorted((out / "cases").glob("*.json"))
    assert cases
    for path in cases:
        case = json.loads(path.read_text())
        validate_case(case, path.stem)
        assert case["status"] == "ok", case.get("error")
        assert case["global"]["n"] == n_facts
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == len(cases) and summary["n_error"] == 0
    return summary


def test_audit_on_bpe_gpt2(real_model, data_dir, tmp_path, capsys):
    rm = real_model("gpt2")
    out = tmp_path / "audit"
    code, _, err = _audit(capsys, rm, data_dir, out, "--bins", 3)
    assert code == 0, err
    summary = _check_audit(out, len(fr.FACTS))
    assert summary["n_cases"] == 3  # one target per popularity bin
    config = json.loads((out / "audit_config.json").read_text())
    assert config["corpus"] == str((data_dir / "corpus.txt").resolve())
    # the corpus sets the key statistics, so resuming with another (or no) corpus must not mix cases
    other = tmp_path / "other.txt"
    other.write_text("\n".join(fr.FILLER) + "\n")
    for extra in (["--corpus", other], []):
        code, _, err = _run(capsys, "audit", "--model", rm.path, "--facts", data_dir / "facts.jsonl", *extra,
                            "--out", out, "--methods", "rome", "--sites", "last", "--per-bin", 1, "--layers", 0,
                            "--bins", 3, "--quiet", "--no-recompute")
        _assert_one_error_line(code, err, "3 case files in")
        assert "computed under other settings (corpus " in err


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_audit_other_families(real_model, data_dir, tmp_path, capsys, family):
    rm = real_model(family)
    out = tmp_path / "audit"
    code, _, err = _audit(capsys, rm, data_dir, out)
    assert code == 0, err
    _check_audit(out, len(fr.FACTS))


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
@pytest.mark.parametrize("method", ["r-rome", "memit", "ft"])
def test_delete_other_methods_other_families(real_model, data_dir, tmp_path, capsys, family, method):
    rm = real_model(family)
    out = tmp_path / "edited"
    code, _, err = _delete(capsys, rm, data_dir, out, method=method, fact=7, layer=1)
    assert code == 0, err
    _check_edited(rm, out, 7, method)


# -- bad input: exit 2, one line, no traceback --------------------------------------------------------
STAGES = {
    "trace": lambda m, f, o: ["trace", "--model", m, "--facts", f, "--out", o],
    "delete": lambda m, f, o: ["delete", "--model", m, "--facts", f, "--fact", 0, "--out", o],
    "audit": lambda m, f, o: ["audit", "--model", m, "--facts", f, "--out", o, "--quiet"],
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_bad_facts_file_missing_field(real_model, tmp_path, capsys, stage):
    rows = fr.fact_rows()
    del rows[2]["target"]
    facts = fr.write_facts(tmp_path / "bad.jsonl", rows)
    code, _, err = _run(capsys, *STAGES[stage](real_model("gpt2").path, facts, tmp_path / "o"))
    _assert_one_error_line(code, err, "bad.jsonl:3: missing or empty field 'target'")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_target_the_tokenizer_cannot_encode(real_model, tmp_path, capsys, stage):
    rows = fr.fact_rows()
    rows.append({"subject": "Omar Khan", "prompt": "Omar Khan resides in", "target": "Zanzibar"})  # not in the vocab
    facts = fr.write_facts(tmp_path / "oov.jsonl", rows)
    code, _, err = _run(capsys, *STAGES[stage](real_model("gpt_neox").path, facts, tmp_path / "o"))
    _assert_one_error_line(code, err, "'Zanzibar' cannot be encoded")
    assert not (tmp_path / "o").exists()


def _copy_without_weights(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        if p.suffix != ".safetensors":
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_model_dir_without_weights(real_model, data_dir, tmp_path, capsys, stage):
    bare = _copy_without_weights(real_model("gpt2").path, tmp_path / "bare")
    code, _, err = _run(capsys, *STAGES[stage](bare, data_dir / "facts.jsonl", tmp_path / "o"))
    _assert_one_error_line(code, err, "has no safetensors weights")
    assert "pickles" not in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_model_dir_with_only_a_bin_file(real_model, data_dir, tmp_path, capsys, stage):
    import torch
    from safetensors.torch import load_file

    src = real_model("gpt2").path
    pickled = _copy_without_weights(src, tmp_path / "pickled")
    torch.save(load_file(str(next(src.glob("*.safetensors")))), pickled / "pytorch_model.bin")
    code, _, err = _run(capsys, *STAGES[stage](pickled, data_dir / "facts.jsonl", tmp_path / "o"))
    _assert_one_error_line(code, err, "has no safetensors weights (it has .bin pickles, which kdel never loads)")
    assert not (tmp_path / "o").exists()


@pytest.mark.ci_may_skip  # skips on a machine with CUDA, by design
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_device_cuda_without_cuda(real_model, data_dir, tmp_path, capsys, stage):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = STAGES[stage](real_model("gpt2").path, data_dir / "facts.jsonl", tmp_path / "o")
    code, _, err = _run(capsys, *args, "--device", "cuda")
    _assert_one_error_line(code, err, "CUDA is not available")
    assert not (tmp_path / "o").exists()
