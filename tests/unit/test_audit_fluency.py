"""Fluency in every audit case: a wrecking edit (a huge ΔW) raises held-out perplexity and is flagged `wrecked`
with the criterion that fired; an ordinary edit is not; kdel's toy models skip fluency unless asked; the fluency
settings are part of each case's fingerprint."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

import tests.unit.test_audit_support  # noqa: F401  (registers "toy-ablate")
from kdel.audit import AuditConfig, run_audit, validate_case
from kdel.audit.measure import wrecked_verdict
from kdel.audit.schema import FluencyRecord, GroupRecord
from kdel.delete import DeletionMethod, register_method
from kdel.errors import UserError
from kdel.facts import FactTable


@dataclass
class WreckHparams:
    scale: float = 100.0  # ||ΔW|| = scale x ||W||
    seed: int = 0


@register_method
class ToyWreck(DeletionMethod):
    """Adds a random matrix of `scale` times W's norm to the edit layer's MLP output matrix (a wrecking edit)."""

    name = "toy-wreck"
    hparams_class = WreckHparams
    objectives = ("erase",)

    def layers_of(self, ctx, request):
        return [request.layer if request.layer is not None else 0]

    def parameters_to_edit(self, ctx, request):
        return [ctx.adapter.mlp_out_param_name(self.layers_of(ctx, request)[0])]

    @torch.no_grad()
    def edit(self, ctx, request):
        w = ctx.model.get_parameter(self.parameters_to_edit(ctx, request)[0])
        noise = torch.randn(w.shape, generator=torch.Generator().manual_seed(self.hparams.seed)).to(w)
        w.add_(noise * (self.hparams.scale * w.norm() / noise.norm()))
        return {}


def _config(**kw) -> AuditConfig:
    base = dict(methods=("toy-ablate", "toy-wreck"), sites=("last",), layers=(0,), fact_ids=(3,),
                tracing_effect=False, unrelated_size=40, seed=0, hparams={"toy-ablate": {"k": 1}}, fluency=True)
    base.update(kw)
    return AuditConfig(**base)


@pytest.fixture(scope="module")
def fluency_run(trained_model_dir, tiny_kg, tmp_path_factory):
    out = tmp_path_factory.mktemp("fluency") / "audit"
    summary = run_audit(trained_model_dir, FactTable.from_kg(tiny_kg), out, _config(), progress=False)
    cases = {c["spec"]["method"]: c for c in (json.loads(p.read_text()) for p in (out / "cases").glob("*.json"))}
    return out, summary, cases


def test_a_wrecking_edit_is_flagged_and_an_ordinary_one_is_not(fluency_run):
    out, summary, cases = fluency_run
    wreck, ordinary = cases["toy-wreck"], cases["toy-ablate"]
    for c in (wreck, ordinary):
        validate_case(c, c["case_id"])
        f = c["fluency"]
        assert f["perplexity_tokens"] > 100 and f["perplexity_before"] > 1  # the KG corpus' held-out lines
        assert f["max_ppl_ratio"] == 2.0 and f["max_entropy_drop"] == 0.3 and len(f["texts_after"]) == 3
    # the same baseline in every case (measured once, before any edit)
    assert wreck["fluency"]["perplexity_before"] == ordinary["fluency"]["perplexity_before"]
    assert wreck["fluency"]["entropy_before"] == ordinary["fluency"]["entropy_before"]
    fw = wreck["fluency"]
    assert fw["perplexity_ratio"] > 2 and fw["perplexity_after"] > 2 * fw["perplexity_before"]
    assert fw["wrecked"] and "perplexity" in fw["wrecked_by"]
    assert wreck["wrecked"] is True and "perplexity" in wreck["wrecked_by"]
    fo = ordinary["fluency"]
    assert fo["perplexity_ratio"] < 1.2 and not fo["wrecked"] and fo["wrecked_by"] == []
    assert ordinary["wrecked"] is False and ordinary["wrecked_by"] == []
    assert summary["n_wrecked"] >= 1
    assert ordinary["timing"]["fluency_s"] > 0


def test_the_verdict_keeps_which_criterion_fired():
    def group(acc_after):
        return GroupRecord(n=10, n_recalled_before=10, acc_before=1.0, acc_after=acc_after,
                           acc_after_recalled=acc_after, flip_rate=1 - acc_after, n_flipped=0, any_broke=False,
                           n_gained=0, mean_logp_before=None, mean_logp_after=None, mean_p_before=None,
                           mean_p_after=None, mean_p_drop=None, hase_neighborhood=None)

    def fluency(by):
        return FluencyRecord(entropy_before=5.0, entropy_after=2.0, entropy_drop=0.6, perplexity_before=10.0,
                             perplexity_after=11.0, perplexity_ratio=1.1, perplexity_tokens=100, wrecked=bool(by),
                             wrecked_by=list(by), max_ppl_ratio=2.0, max_entropy_drop=0.3)

    assert wrecked_verdict({"unrelated": group(1.0)}, fluency(["entropy"])) == (True, ["entropy"])
    assert wrecked_verdict({"unrelated": group(0.5)}, fluency([])) == (True, ["unrelated_accuracy"])
    assert wrecked_verdict({"unrelated": group(0.5)}, fluency(["perplexity", "entropy"])) == \
        (True, ["unrelated_accuracy", "perplexity", "entropy"])
    assert wrecked_verdict({"unrelated": group(0.95)}, None) == (False, [])


def test_toy_models_skip_fluency_by_default_and_the_setting_is_fingerprinted(fluency_run, trained_model_dir,
                                                                             tiny_kg, tmp_path):
    out, _, cases = fluency_run
    table = FactTable.from_kg(tiny_kg)
    quiet = tmp_path / "default"
    run_audit(trained_model_dir, table, quiet, _config(methods=("toy-ablate",), fluency=None), progress=False)
    config = json.loads((quiet / "audit_config.json").read_text())
    assert config["config"]["fluency"] is False and config["inputs"]["fluency"]["on"] is False
    (case,) = [json.loads(p.read_text()) for p in (quiet / "cases").glob("*.json")]
    assert "fluency" not in case and case["wrecked_by"] == []
    # the same case with fluency on is another result: a resume under the other setting recomputes it
    assert case["case_id"] == cases["toy-ablate"]["case_id"]
    assert case["fingerprint"]["hash"] != cases["toy-ablate"]["fingerprint"]["hash"]
    with pytest.raises(UserError, match="fluency.on true -> false"):
        run_audit(trained_model_dir, table, out, _config(fluency=False), progress=False, recompute=False)
