"""Shared fixtures: one tiny KG and one model trained on it per session; tiny random models per family."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # measured ~5x faster than 2 threads for models this small

TINY_KG_KWARGS = dict(topology="ba", entities=30, relations=12, seed=0, ba_m=3)
SENTENCES = [
    "Maria Lopez works with John Smith",
    "Maria Lopez lives in Paris",
    "John Smith is a colleague of Ann Lee",
    "Ann Lee was born in Rome",
    "the capital city of Peter Pan is London",
]


@pytest.fixture(scope="session")
def tiny_kg():
    from synth_kg import KGConfig, generate

    return generate(KGConfig(**TINY_KG_KWARGS))


@pytest.fixture(scope="session")
def tiny_kg_dir(tiny_kg, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kg") / "tiny_kg"
    tiny_kg.save(out)
    return out


@pytest.fixture(scope="session")
def trained_model_dir(tiny_kg, tiny_kg_dir, tmp_path_factory) -> Path:
    """A `tiny` model trained to recall >= 0.99 on the tiny KG, once per session.

    Cached across sessions under .pytest_cache keyed by the KG hash and the training code, so a rerun
    with unchanged code reuses it (set KDEL_TEST_RETRAIN=1 to force training).
    """
    import hashlib

    from kdel.train import TrainConfig, train_model

    src = Path(__file__).resolve().parents[1] / "kdel" / "train"
    code = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(src.glob("*.py")))).hexdigest()[:12]
    key = f"{tiny_kg.content_hash()[:12]}-{code}"
    cache = Path(__file__).resolve().parents[1] / ".pytest_cache" / "kdel-models" / key
    if cache.exists() and not os.environ.get("KDEL_TEST_RETRAIN") and (cache / "config.json").exists():
        return cache
    train_model(tiny_kg_dir, cache, TrainConfig(preset="tiny", seed=0))
    return cache


def _word_tokenizer():
    from kdel.models.tokenizer import build_word_tokenizer

    return build_word_tokenizer(SENTENCES)


def build_random_model(family: str, n_layers: int = 3, d_model: int = 32, seed: int = 0):
    """(model, tokenizer): a tiny randomly initialised causal LM of `family` over a small word vocabulary."""
    from tests.fixtures_real import build_model

    tok = _word_tokenizer()
    model = build_model(family, len(tok), tok, n_layers=n_layers, d_model=d_model, seed=seed, kv_heads=4)
    model.eval()
    return model, tok


@pytest.fixture
def random_model():
    """Factory fixture: random_model('gpt2' | 'llama' | 'gpt_neox', n_layers=3, d_model=32, seed=0)."""
    return build_random_model


@pytest.fixture
def random_model_dir(tmp_path):
    """Factory: save a random model of `family` (+ tokenizer) to a directory and return the path."""

    def make(family: str = "gpt2", **kw) -> Path:
        model, tok = build_random_model(family, **kw)
        out = tmp_path / f"{family}-model"
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        return out

    return make


# -- test tiers (docs/testing.md) ------------------------------------------------------------------------
# unit: no model training (the whole tier <= 60 s on 2 cores); integration: trains (or reuses the cached) tiny
# model, or runs a stage end to end; acceptance: the slow end-to-end checks (`slow` is its old name).
TRAINED = {"trained_model_dir"}  # the fixture that trains; any test depending on it (transitively) is integration


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath))
        explicit = [t for t in ("unit", "integration", "acceptance") if item.get_closest_marker(t)]
        if explicit:
            tier = explicit[-1]
        elif item.get_closest_marker("slow") or "acceptance" in path.parts:
            tier = "acceptance"
        elif "integration" in path.parts or TRAINED & set(getattr(item, "fixturenames", ())):
            tier = "integration"
        else:
            tier = "unit"
        if not explicit:
            item.add_marker(getattr(pytest.mark, tier))
        if tier == "acceptance" and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


# -- CI: a skipped test is a failure (KDEL_CI=1, set by .ci/run) -----------------------------------------------
# The Ray and browser tests skip on a developer's machine without Ray or Chromium; in CI they must run, so a skip
# there means CI is not testing what it claims. Tests marked `ci_may_skip` skip by design (e.g. on a CUDA machine).
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and os.environ.get("KDEL_CI") == "1" and not item.get_closest_marker("ci_may_skip"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"skipped in CI (KDEL_CI=1 makes every skip a failure): {reason}"
