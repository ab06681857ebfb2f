"""Attribution patching: its estimates are the derivative of the exact patch along the patch direction (checked by
finite differences), equal the exact tracer when the metric is linear in the patched activation, and are labelled
approximate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdel.facts import Fact, FactTable
from kdel.models.adapter import ModelAdapter, first_tensor, with_first_tensor
from kdel.trace import TraceConfig, load_traces, save_traces, trace_many
from kdel.trace.api import _corruption
from kdel.trace.attribution import attribution_maps
from kdel.trace.metrics import mean_metrics, row_metrics
from kdel.trace.record import COMPONENTS, _batch_inputs

FACTS = [
    Fact(0, "Maria Lopez", "John Smith", None, ("Maria Lopez works with",)),
    Fact(1, "Peter Pan", "London", None, ("the capital city of Peter Pan is",)),
]
TABLE = FactTable(FACTS, "facts", "test")


def _forward(adapter, runs):
    """An ordinary full forward (not the recorder under test): every component output, and the logits at each
    row's last real position."""
    ids, noise, last = _batch_inputs(adapter, runs)
    acts, handles = {}, []
    for c in COMPONENTS:
        for i in range(adapter.n_layers):
            handles.append(adapter.component(c, i).register_forward_hook(
                lambda _m, _inp, out, key=(c, i): acts.__setitem__(key, first_tensor(out).detach())))
    if noise is not None:
        handles.append(adapter.embed.register_forward_hook(lambda _m, _i, out: out + noise))
    try:
        with torch.no_grad():
            out = adapter.model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return acts, None, out.logits[torch.arange(len(last)), last]


def _patched(adapter, run, comp, layer, pos, values, o, alt, clean_lp):
    """Mean metrics of the base run with component (layer, pos) set to values (rows, d)."""
    ids, noise, _ = _batch_inputs(adapter, [run])
    ids = ids.expand(len(values), -1)  # a clean base run has one row; the patch values have one per noise draw
    handles = []

    def hook(_m, _i, out):
        h = first_tensor(out).clone()
        h[:, pos] = values
        return with_first_tensor(out, h)

    handles.append(adapter.component(comp, layer).register_forward_hook(hook))
    if noise is not None:
        handles.append(adapter.embed.register_forward_hook(lambda _m, _i, out: out + noise))
    try:
        with torch.no_grad():
            logits = adapter.model(input_ids=ids, use_cache=False).logits[:, len(run.ids) - 1]
    finally:
        for h in handles:
            h.remove()
    return mean_metrics(row_metrics(logits, o, alt, clean_lp))


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_estimate_is_the_directional_derivative(random_model, direction):
    model, tok = random_model("gpt2")
    model.double()
    adapter = ModelAdapter(model, tok)
    config = TraceConfig(noise_samples=3, direction=direction)
    corr = _corruption(tok, FACTS[0], TABLE, adapter, config, None)[0]
    a = attribution_maps(adapter, [corr], config)
    (setup,), (maps,) = a.setups, a.maps
    base, src = (corr.corrupted, corr.clean) if direction == "denoise" else (corr.clean, corr.corrupted)
    base_acts = _forward(adapter, [base])[0]
    src_acts = _forward(adapter, [src])[0]
    clean_lp = torch.log_softmax(_forward(adapter, [corr.clean])[2][0].double(), -1)
    rows = max(base.n_rows, src.n_rows)
    base_m = setup.corrupted if direction == "denoise" else setup.clean
    eps = 1e-4
    checked = 0
    for comp, layer, pos in [("resid", 1, 2), ("mlp", 0, 2), ("attn", 2, 4), ("mlp", 2, 4), ("resid", 0, 1)]:
        a = base_acts[(comp, layer)][:, pos].expand(rows, -1)
        b = src_acts[(comp, layer)][:, pos].expand(rows, -1)
        plus = _patched(adapter, base, comp, layer, pos, a + eps * (b - a), setup.target_id, setup.alt_id, clean_lp)
        minus = _patched(adapter, base, comp, layer, pos, a - eps * (b - a), setup.target_id, setup.alt_id, clean_lp)
        for m in ("prob", "logprob", "logit_diff", "kl"):
            derivative = (plus[m] - minus[m]) / (2 * eps)
            estimate = maps[comp][m][layer, pos] - base_m[m]
            assert estimate == pytest.approx(derivative, rel=1e-5, abs=1e-9)
            checked += abs(derivative) > 1e-6
    assert checked >= 8  # the check is not vacuous


class _Scale(torch.nn.Module):
    def forward(self, x):
        return 300.0 * x  # linear, and large enough that probabilities are far from linear


def _linear_model(random_model):
    """GPT-2 with a linear final "norm" whose blocks after the first add nothing: the logits are linear in
    every block output and in layer 0's MLP output at the last position."""
    model, tok = random_model("gpt2", n_layers=3)
    model.double()
    model.transformer.ln_f = _Scale()
    with torch.no_grad():
        for block in model.transformer.h[1:]:
            for lin in (block.attn.c_proj, block.mlp.c_proj):
                lin.weight.zero_()
                lin.bias.zero_()
    return model, tok


@pytest.mark.parametrize("direction", ["denoise", "noise"])
@pytest.mark.parametrize("window", [1, 2])
def test_exact_when_the_metric_is_linear(random_model, direction, window):
    model, tok = _linear_model(random_model)
    kw = dict(direction=direction, window=window, noise_samples=3, components=("resid", "mlp"))
    approx = trace_many(model, tok, FACTS, TABLE, TraceConfig(method="attribution", **kw))
    exact = trace_many(model, tok, FACTS, TABLE, TraceConfig(**kw))
    spread, nonlinear = [], []
    for a, e in zip(approx, exact):
        for comp in ("resid", "mlp"):
            assert np.allclose(a.patched[comp]["logit_diff"], e.patched[comp]["logit_diff"], atol=1e-12, rtol=0)
            spread.append(np.ptp(e.patched[comp]["logit_diff"]))
        nonlinear.append(np.abs(a.patched["resid"]["prob"] - e.patched["resid"]["prob"]).max())
    assert max(spread) > 1e-3  # sites do move the metric
    assert max(nonlinear) > 1e-6  # probability is not linear in the activation: there the estimate differs


def test_labelled_approximate_and_round_trip(random_model, tmp_path):
    model, tok = random_model("llama")
    traces = trace_many(model, tok, FACTS, TABLE, TraceConfig(method="attribution", noise_samples=2, window=2))
    exact = trace_many(model, tok, FACTS, TABLE, TraceConfig(noise_samples=2, components=("resid",)))
    for t, e in zip(traces, exact):
        assert t.approximate and not e.approximate
        assert t.clean == pytest.approx(e.clean, rel=1e-5) and t.corrupted == pytest.approx(e.corrupted, rel=1e-5)
        assert t.patched["attn"]["prob"].shape == (3, len(t.tokens))
    save_traces(traces, tmp_path / "tr")
    (line,) = [ln for ln in (tmp_path / "tr" / "traces.jsonl").read_text().splitlines()][:1]
    assert '"approximate": true' in line
    back = load_traces(tmp_path / "tr")
    assert back[0].approximate and back[0].config.method == "attribution"


def test_kl_noising_estimate_is_zero(random_model):
    """The clean run is KL's minimum: its gradient vanishes, so noising attribution says nothing about kl."""
    model, tok = random_model("gpt2")
    model.double()
    (t,) = trace_many(model, tok, FACTS[:1], TABLE, TraceConfig(method="attribution", direction="noise",
                                                               noise_samples=2, metrics=("kl",)))
    assert np.allclose(t.patched["resid"]["kl"], 0.0, atol=1e-12)


def test_cli_method_attribution(random_model_dir, tmp_path, capsys, monkeypatch):
    import json

    import kdel.trace.api as api
    from kdel.cli.main import main

    monkeypatch.setattr(api, "known_mask", lambda m, t, fs: np.ones(len(fs), dtype=bool))
    facts = tmp_path / "facts.jsonl"
    facts.write_text("".join(json.dumps({"subject": f.subject, "prompt": f.prompt, "target": f.target}) + "\n"
                             for f in FACTS))
    out = tmp_path / "tr"
    rc = main(["trace", "--model", str(random_model_dir("gpt2")), "--facts", str(facts), "--out", str(out),
               "--method", "attribution", "--position", "last", "--noise-samples", "2"])
    assert rc == 0, capsys.readouterr().err
    assert "approximate" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "attribution" and summary["approximate"] is True
    assert all(t.approximate for t in load_traces(out))
    rc = main(["trace", "--model", str(random_model_dir("gpt2")), "--facts", str(facts), "--out", str(out),
               "--method", "guess"])
    assert rc == 2 and "unknown method" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_recorded_base_equals_record_from(random_model, family):
    """Attribution's forward (gradients on) records the corrupted runs exactly as record_from does (no grad),
    so two-stage layer choice confirms on it without a second corrupted forward; the estimates are unchanged."""
    from kdel.trace.patch import _first_changed
    from kdel.trace.record import record_from, record_runs

    model, tok = random_model(family)
    adapter = ModelAdapter(model, tok)
    cfg = TraceConfig(noise_samples=3, components=("mlp",), metrics=("prob",), window=2)
    corr = [_corruption(tok, f, TABLE, adapter, cfg, 1.0)[0] for f in FACTS]
    clean = record_runs(adapter, [c.clean for c in corr])
    a = attribution_maps(adapter, corr, cfg, clean=clean, record_base=True)
    setups, maps, base = a.setups, a.maps, a.base_run
    ref = record_from(adapter, clean, [c.corrupted for c in corr], [_first_changed(c) for c in corr], acts=(),
                      base=True)
    assert set(base.acts) == set(ref.acts) and base.additive == ref.additive and base.offsets == ref.offsets
    assert all(torch.equal(base.acts[k], ref.acts[k]) for k in ref.acts)
    assert all(torch.equal(a, b) for a, b in zip(base.block_inputs, ref.block_inputs))
    assert all(torch.equal(base.kv[i][j], ref.kv[i][j]) for i in ref.kv for j in range(2))
    assert torch.equal(base.logits, ref.logits) and not base.logits.requires_grad
    a2 = attribution_maps(adapter, corr, cfg, clean=clean)
    maps2 = a2.maps
    assert a2.base_run is None
    for m, m2 in zip(maps, maps2):
        assert np.array_equal(m["mlp"]["prob"], m2["mlp"]["prob"])
    with pytest.raises(ValueError, match="denoising"):
        attribution_maps(adapter, corr, TraceConfig(direction="noise", components=("mlp",)), record_base=True)
