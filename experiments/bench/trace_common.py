"""Shared by the tracing benchmarks: a random real-shape model, the toy model, old code, timers.

Not a test. Nothing is downloaded: the real-shape model is a randomly initialised Llama of the size of a
small pretrained one, with a word-level tokenizer over a few sentences.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = [  # subject, relation phrase, object: short prompts like a real facts file's
    ("Danielle Darrieux", "The mother tongue of {} is", "French"),
    ("Edwin Hubble", "The field of work of {} is", "astronomy"),
    ("Toko Yasuda", "The instrument played by {} is the", "guitar"),
    ("Maria Lopez", "The city where {} was born is", "Madrid"),
    ("John Smith", "The company that employs {} is", "Google"),
    ("Ann Lee", "The sport played by {} is", "tennis"),
]
REAL_SHAPE = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=24, num_attention_heads=12,
                  num_key_value_heads=12, vocab_size=32000)


def real_facts():
    from kdel.facts import Fact, FactTable

    facts = [Fact(i, s, o, None, (p.format(s),)) for i, (s, p, o) in enumerate(SENTENCES)]
    return FactTable(facts, "facts", "real-shape"), facts


def real_shape_model(seed: int = 0, **overrides):
    """(model, tokenizer, n_params): a random Llama of REAL_SHAPE (24 layers, d=768, ~219M parameters)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from kdel.models.tokenizer import build_word_tokenizer

    lines = [p.format(s) + " " + o for s, p, o in SENTENCES]
    tok = build_word_tokenizer(lines)
    torch.manual_seed(seed)
    shape = {**REAL_SHAPE, **overrides}
    cfg = LlamaConfig(max_position_embeddings=128, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      **shape)
    model = LlamaForCausalLM(cfg).eval().to(device())
    return model, tok, sum(p.numel() for p in model.parameters())


_DEVICE = ["cpu"]  # where the benchmark's models run (set_device)


def add_device_arg(ap) -> None:
    ap.add_argument("--device", default="cpu", help="cpu or cuda (times are then wall times, synchronised)")


def set_device(name: str) -> str:
    """Run the benchmark's models on `name`; a missing CUDA device is one line and exit 2."""
    problem = (f"--device must be cpu or cuda, got {name!r}" if name not in ("cpu", "cuda") else
               "--device cuda: no CUDA device is available here" if name == "cuda" and not torch.cuda.is_available()
               else None)
    if problem:
        print(problem, file=sys.stderr)
        raise SystemExit(2)
    _DEVICE[0] = name
    return name


def device() -> str:
    return _DEVICE[0]


def toy_model(model_dir: str, kg_dir: str):
    """The trained toy model, its fact table and the facts it recalls."""
    from kdel.facts import load_fact_table
    from kdel.models.loading import load_model
    from kdel.trace import known_mask

    table = load_fact_table(kg=kg_dir)
    model, tok = load_model(model_dir, device(), kg_hash=table.source_hash)
    known = known_mask(model, tok, table.facts)
    return model, tok, table, [f for f, k in zip(table.facts, known) if k]


def _sync() -> None:
    if device() == "cuda":
        torch.cuda.synchronize()


def timed(fn):
    """(result, wall seconds, CPU seconds of this process); on CUDA the device is synchronised first and last."""
    _sync()
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    _sync()
    return out, time.perf_counter() - w, time.process_time() - c


def median(xs) -> float:
    return float(statistics.median(xs))


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def checkout(ref: str) -> Path:
    """The kdel and synth_kg packages of git `ref` in a temporary directory (for timing old code)."""
    out = Path(tempfile.mkdtemp(prefix="kdel-old-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "kdel", "synth_kg"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def run_with(pythonpath: Path, args: list[str]) -> str:
    """Run this benchmark's worker mode with another kdel on the path; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([sys.executable, *args], env=env, check=True, capture_output=True, text=True).stdout


class LinearFlops:
    """Counts the multiply-add FLOPs (2 x rows x in x out) of every nn.Linear call of `model` while active:
    the bulk of a transformer's arithmetic (attention scores and norms are not counted), free of load."""

    def __init__(self, model):
        self.flops = 0
        self._handles = [m.register_forward_pre_hook(self._count) for m in model.modules()
                         if isinstance(m, torch.nn.Linear)]

    def _count(self, m, args):
        self.flops += 2 * (args[0].numel() // m.in_features) * m.in_features * m.out_features

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def gemm_peak_gflops(d: int = 768, d_ff: int = 2048, rows: int = 512, reps: int = 20) -> float:
    """The float32 matrix-multiply rate of the benchmark's device (CPU: one thread), best of 3 x `reps`, GFLOP/s:
    the ceiling for any exact implementation that does the same arithmetic."""
    a, w = torch.randn(rows, d, device=device()), torch.randn(d_ff, d, device=device())
    best = 0.0
    for _ in range(3):
        _sync()
        t = time.perf_counter()
        for _ in range(reps):
            torch.nn.functional.linear(a, w)
        _sync()
        best = max(best, 2 * rows * d * d_ff * reps / (time.perf_counter() - t) / 1e9)
    return best
