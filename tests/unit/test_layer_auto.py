"""`--layer auto` / `--layers auto` wiring: delete and audit use and record the evidence-based choice.

The choice itself (kdel.trace.localize) is tested by the trace stage; here a constructed trace (effects per layer
and site, decided by the real `_decide`) replaces the traced one, so the commands' use of it is checked exactly:
an embedding-like layer with the largest effect is never edited, the record carries the effect, the runner-up,
the window and the exclusions, a listed layer is never chosen, and a choice without evidence falls back to the
family default with a warning. One test runs the real traced choice end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tests.unit.test_audit_support  # noqa: F401  (registers "toy-ablate")
from kdel.cli.main import main
from kdel.delete.layer_auto import batch_pick, site_pick
from kdel.trace.localize import _decide
from tests import fixtures_real as fr

CACHE = Path(__file__).resolve().parents[2] / ".pytest_cache" / "kdel-real-models"

# a constructed trace of a 4-layer model: layer 0 restores the fact from every subject token (embedding-like)
# and has the largest effect at both sites; the evidence points at layer 2 (subject_last) and 1 (last)
SUBJECT_LAST = {0: 0.97, 1: 0.20, 2: 0.60, 3: 0.10}
LAST = {0: 0.30, 1: 0.25, 2: 0.10, 3: 0.05}
SUBJECT_TOKENS = {0: [0.95, 0.97], 1: [0.0, 0.20], 2: [0.05, 0.60], 3: [0.0, 0.10]}


def constructed(fact_id, n_layers=4, family="llama", window=1, listed=(), sl=SUBJECT_LAST, last=LAST,
                subject=SUBJECT_TOKENS):
    c = _decide(fact_id, {"subject_last": dict(sl), "last": dict(last)}, subject, n_layers, family, window,
                list(listed), 0.1, 2.0, 0.9, "exact")
    c.confirmed = {"subject_last": dict(sl), "last": dict(last)}
    return c


@pytest.fixture
def fake_trace(monkeypatch):
    """Replace the traced choice by the constructed one; `calls` records what the commands asked for."""
    import kdel.trace.localize as localize

    calls = []
    state = {"sl": SUBJECT_LAST, "last": LAST}

    def fake(model, tok, facts, table, window=None, exclude_layers=(), min_effect=0.1, embedding_threshold=0.9,
             config=None, **kw):
        calls.append({"facts": [f.id for f in facts], "window": window, "exclude": list(exclude_layers)})
        return [constructed(f.id, window=window or 1, listed=exclude_layers, sl=state["sl"], last=state["last"])
                for f in facts]

    monkeypatch.setattr(localize, "choose_site_layers", fake)
    return calls, state


@pytest.fixture(scope="module")
def llama() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return fr.cached_real_model("llama", CACHE).path


@pytest.fixture(scope="module")
def facts_file(tmp_path_factory) -> Path:
    return fr.write_facts(tmp_path_factory.mktemp("facts") / "facts.jsonl", fr.fact_rows())


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDEL_CACHE_DIR", str(tmp_path / "kdel-cache"))


@pytest.fixture(scope="module")
def fast_hp(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hp") / "hp.yaml"
    path.write_text("steps: 5\nn_prefixes: 1\n")  # ROME, fewer optimisation steps: the wiring is under test
    return path


def _run(capsys, *args):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _down_proj(model_dir: Path, layer: int) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(next(model_dir.glob("*.safetensors"))))[f"model.layers.{layer}.mlp.down_proj.weight"]


# -- the pick rules ----------------------------------------------------------------------------------------
def test_site_pick_never_returns_an_embedding_like_layer():
    c = constructed(7)
    assert (c.site, c.layer) == ("subject_last", 2) and "embedding-like" in c.excluded[0]
    p = site_pick(c, "subject_last", "llama", 4)
    assert (p["layer"], p["effect"], p["runner_up_layer"], p["runner_up_effect"]) == (2, 0.6, 1, 0.2)
    assert p["excluded"] == {"0": c.excluded[0]} and not p["fallback"] and p["chosen_site"] == "subject_last"
    q = site_pick(c, "last", "llama", 4)  # layer 0 has the largest effect at `last` too: still excluded
    assert (q["layer"], q["effect"], q["runner_up_layer"]) == (1, 0.25, 2)
    listed = site_pick(constructed(7, listed=[2]), "subject_last", "llama", 4)
    assert listed["layer"] == 1 and listed["excluded"]["2"] == "listed"
    weak = constructed(7, sl={i: 0.01 for i in range(4)}, last={i: 0.02 for i in range(4)},
                       subject={i: [0.0, 0.01] for i in range(4)})
    p = site_pick(weak, "last", "llama", 32)
    assert p["fallback"] and p["layer"] == 5 and "llama default layer 5 of 32" in p["fallback_reason"]


def test_batch_pick_takes_the_most_common_pair_then_the_larger_effect():
    picks = [{"site": "last", "layer": 1, "effect": 0.2}, {"site": "subject_last", "layer": 2, "effect": 0.5},
             {"site": "last", "layer": 1, "effect": 0.3}]
    assert batch_pick(picks) == ("last", 1)
    assert batch_pick(picks[:2]) == ("subject_last", 2)  # one each: the larger effect
    tie = [{"site": "last", "layer": 1, "effect": 0.4}, {"site": "last", "layer": 3, "effect": 0.4}]
    assert batch_pick(tie) == ("last", 1)  # then the first fact's


# -- kdel delete ---------------------------------------------------------------------------------------------
def test_delete_layer_auto_uses_and_records_the_choice(llama, facts_file, tmp_path, capsys, fake_trace, fast_hp):
    calls, _ = fake_trace
    out = tmp_path / "edited"
    code, stdout, err = _run(capsys, "delete", "--model", llama, "--facts", facts_file, "--fact", 0,
                             "--corpus", self_corpus := "self:400", "--trace-window", 2, "--hparams", fast_hp,
                             "--out", out)
    assert code == 0, err
    assert calls == [{"facts": [0], "window": 2, "exclude": []}]
    record = json.loads((out / "edit.json").read_text())
    assert (record["site"], record["layer"], record["layers"]) == ("subject_last", 2, [2])
    assert record["records"][0]["site"] == "subject_last" and record["records"][0]["layers"] == [2]
    (fact,) = record["layer_choice"]["facts"]
    pick = fact["pick"]
    assert (pick["layer"], pick["effect"], pick["runner_up_layer"], pick["runner_up_effect"]) == (2, 0.6, 1, 0.2)
    assert "embedding-like" in pick["excluded"]["0"] and pick["window"] == 2 and not pick["fallback"]
    assert fact["choice"]["layer"] == 2 and record["layer_choice"]["window"] == 2
    assert "(auto)" in stdout and "at layer(s) 2 (subject_last)" in stdout
    # the weights: layer 2 edited, the embedding-like layer 0 untouched
    assert torch.equal(_down_proj(out, 0), _down_proj(llama, 0))
    assert not torch.equal(_down_proj(out, 2), _down_proj(llama, 2))
    assert record["corpus"]["spec"] == self_corpus and record["corpus"]["source"] == "self"
    assert record["corpus"]["tokens"] > 0 and record["records"][0]["info"]["cov_corpus"]["spec"] == self_corpus


def test_delete_auto_layer_at_a_given_site_and_with_exclusions(llama, facts_file, tmp_path, capsys, fake_trace,
                                                               fast_hp):
    out = tmp_path / "last"
    code, _, err = _run(capsys, "delete", "--model", llama, "--facts", facts_file, "--fact", 1, "--site", "last",
                        "--corpus", "self:300", "--hparams", fast_hp, "--out", out)
    assert code == 0, err
    record = json.loads((out / "edit.json").read_text())
    assert (record["site"], record["layers"]) == ("last", [1])  # layer 0 is larger at `last`, but excluded
    out = tmp_path / "excl"
    code, _, err = _run(capsys, "delete", "--model", llama, "--facts", facts_file, "--fact", 1,
                        "--exclude-layers", "2", "--corpus", "self:300", "--hparams", fast_hp, "--out", out)
    assert code == 0, err
    record = json.loads((out / "edit.json").read_text())
    assert record["layers"] == [1] and record["layer_choice"]["exclude_layers"] == [2]
    assert record["layer_choice"]["facts"][0]["pick"]["excluded"]["2"] == "listed"


def test_delete_falls_back_with_one_warning(llama, facts_file, tmp_path, capsys, fake_trace, fast_hp):
    _, state = fake_trace
    state["sl"], state["last"] = {i: 0.01 for i in range(4)}, {i: 0.02 for i in range(4)}
    out = tmp_path / "edited"
    code, _, err = _run(capsys, "delete", "--model", llama, "--facts", facts_file, "--fact", 0, "--fact", 2,
                        "--corpus", "self:300", "--hparams", fast_hp, "--out", out)
    assert code == 0, err
    warned = [ln for ln in err.splitlines() if "minimum effect" in ln]
    assert len(warned) == 1 and warned[0].startswith("kdel: warning: 2 of 2 facts: no layer reaches"), err
    record = json.loads((out / "edit.json").read_text())
    assert record["layers"] == [1] and record["site"] == "subject_last"  # llama: round(0.16 x 4) = 1
    assert all(f["pick"]["fallback"] for f in record["layer_choice"]["facts"])


def test_sequential_auto_edits_each_fact_at_its_own_choice(llama, facts_file, tmp_path, capsys, monkeypatch,
                                                           fast_hp):
    import kdel.trace.localize as localize

    chosen = {0: ({0: 0.0, 1: 0.0, 2: 0.7, 3: 0.1}, {i: 0.0 for i in range(4)}),
              2: ({0: 0.0, 1: 0.1, 2: 0.0, 3: 0.0}, {0: 0.0, 1: 0.0, 2: 0.1, 3: 0.6})}

    def fake(model, tok, facts, table, window=None, exclude_layers=(), **kw):
        return [constructed(f.id, sl=chosen[f.id][0], last=chosen[f.id][1],
                            subject={i: [0.0, chosen[f.id][0][i]] for i in range(4)}) for f in facts]

    monkeypatch.setattr(localize, "choose_site_layers", fake)
    out = tmp_path / "seq"
    code, stdout, err = _run(capsys, "delete", "--model", llama, "--facts", facts_file, "--fact", 0, "--fact", 2,
                             "--sequential", "--corpus", "self:300", "--hparams", fast_hp, "--out", out)
    assert code == 0, err
    record = json.loads((out / "edit.json").read_text())
    assert [(a["fact_ids"], a["site"], a["layers"]) for a in record["applied"]] == \
        [([0], "subject_last", [2]), ([2], "last", [3])]
    assert record["site"] is None and record["layers"] == [2, 3] and "per fact" in stdout


def test_gradient_methods_record_no_site(llama, facts_file, tmp_path, capsys, fake_trace):
    calls, _ = fake_trace
    hp = tmp_path / "hp.yaml"
    hp.write_text("steps: 2\n")
    out = tmp_path / "ft"
    code, _, err = _run(capsys, "delete", "--model", llama, "--facts", facts_file, "--fact", 0, "--method", "ft",
                        "--hparams", hp, "--corpus", "self:300", "--out", out)
    assert code == 0, err
    record = json.loads((out / "edit.json").read_text())
    assert record["site"] is None and record["records"][0]["site"] is None
    assert record["applied"][0]["site"] is None
    assert record["layer_choice"]["facts"][0]["pick"]["layer"] == 2  # ft edits a layer: chosen from evidence
    out = tmp_path / "ga"
    calls.clear()
    code, _, err = _run(capsys, "delete", "--model", llama, "--facts", facts_file, "--fact", 0, "--method", "ga",
                        "--hparams", hp, "--corpus", "self:300", "--out", out)
    assert code == 0, err
    record = json.loads((out / "edit.json").read_text())
    assert record["site"] is None and record["layer_choice"] is None and calls == []  # nothing to choose


# -- kdel audit ----------------------------------------------------------------------------------------------
def _audit(capsys, llama, facts_file, out, *extra):
    return _run(capsys, "audit", "--model", llama, "--facts", facts_file, "--out", out, "--methods", "toy-ablate",
                "--per-bin", 1, "--bins", 1, "--no-tracing-effect", "--no-fluency", "--quiet", *extra)


def _cases(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "cases").glob("*.json"))]


def test_audit_layers_auto_uses_and_records_the_choice(llama, facts_file, tmp_path, capsys, fake_trace):
    calls, _ = fake_trace
    out = tmp_path / "audit"
    code, _, err = _audit(capsys, llama, facts_file, out, "--layers", "auto", "--sites", "subject_last,last",
                          "--trace-window", 3, "--exclude-layers", "3")
    assert code == 0, err
    assert calls and all(c["window"] == 3 and c["exclude"] == [3] for c in calls)
    cases = _cases(out)
    assert sorted((c["spec"]["site"], c["spec"]["layer"]) for c in cases) == [("last", 1), ("subject_last", 2)]
    for c in cases:
        choice = c["trace"]["layer_choice"]
        assert choice["layer"] == c["spec"]["layer"] and choice["site"] == c["spec"]["site"]
        assert choice["window"] == 3 and "embedding-like" in choice["excluded"]["0"]
        assert choice["excluded"]["3"] == "listed" and choice["runner_up_layer"] is not None
        assert c["trace"]["peak_layers"] == {"subject_last": 2, "last": 1} and c["spec"]["layer_source"] == "auto"
    config = json.loads((out / "audit_config.json").read_text())["config"]
    assert config["trace_window"] == 3 and config["exclude_layers"] == [3]


def test_audit_sites_auto_takes_the_chosen_site(llama, facts_file, tmp_path, capsys, fake_trace):
    out = tmp_path / "audit"
    code, _, err = _audit(capsys, llama, facts_file, out, "--layers", "auto", "--sites", "auto")
    assert code == 0, err
    (case,) = _cases(out)
    assert (case["spec"]["site"], case["spec"]["layer"]) == ("subject_last", 2)
    assert case["trace"]["layer_choice"]["chosen_site"] == "subject_last"
    code, _, err = _audit(capsys, llama, facts_file, tmp_path / "bad", "--sites", "auto,last")
    assert code == 2 and "give it alone" in err
    code, _, err = _audit(capsys, llama, facts_file, tmp_path / "bad", "--exclude-layers", "9")
    assert code == 2 and "--exclude-layers: layer 9 is out of range" in err


def test_real_traced_choice_end_to_end(llama, facts_file, tmp_path, capsys, fast_hp):
    """No fake: the traced choice on the fine-tuned tiny Llama, recorded consistently with what was edited."""
    out = tmp_path / "edited"
    code, _, err = _run(capsys, "delete", "--model", llama, "--facts", facts_file, "--fact", 3,
                        "--corpus", "self:300", "--hparams", fast_hp, "--out", out)
    assert code == 0, err
    record = json.loads((out / "edit.json").read_text())
    (fact,) = record["layer_choice"]["facts"]
    pick, choice = fact["pick"], fact["choice"]
    assert record["layers"] == [pick["layer"]] and record["site"] == pick["site"] == choice["site"]
    assert choice["window"] == 1 and choice["method"] == "exact"  # 4 layers: window 1, exact only (< 4 x top_k layers)
    assert str(pick["layer"]) not in pick["excluded"]
    if not pick["fallback"]:
        assert pick["effect"] >= 0.1
        assert pick["effect"] == pytest.approx(choice["confirmed"][pick["site"]][str(pick["layer"])], abs=1e-6)


def test_audit_reuses_a_trace_run_for_the_choice(llama, facts_file, tmp_path, capsys, monkeypatch):
    """--traces DIR: the choice comes from the stored traces (same rule), nothing is traced again."""
    import kdel.trace.localize as localize
    from kdel.delete.layer_auto import choice_from_trace, site_pick
    from kdel.trace import load_traces

    code, _, err = _run(capsys, "trace", "--model", llama, "--facts", facts_file, "--out", tmp_path / "tr",
                        "--component", "mlp", "--metric", "prob", "--noise-samples", 3)
    assert code == 0, err
    monkeypatch.setattr(localize, "choose_site_layers", lambda *a, **k: pytest.fail("traced again"))
    out = tmp_path / "audit"
    code, _, err = _audit(capsys, llama, facts_file, out, "--layers", "auto", "--sites", "subject_last,last",
                          "--traces", tmp_path / "tr", "--exclude-layers", "0")
    assert code == 0, err
    traces = {t.fact_id: t for t in load_traces(tmp_path / "tr")}
    cases = _cases(out)
    assert cases
    for c in cases:
        choice = choice_from_trace(traces[c["fact"]["id"]], "llama", exclude_layers=[0])
        want = site_pick(choice, c["spec"]["site"], "llama", 4)
        got = c["trace"]["layer_choice"]
        assert got["method"] == "reused-trace" and got["layer"] == want["layer"] == c["spec"]["layer"] != 0
        assert got["excluded"]["0"] == "listed" and got["effect"] == want["effect"]
