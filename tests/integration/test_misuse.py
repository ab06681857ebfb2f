"""Misuse table: every way a user can aim kdel at the wrong place exits with one line and loses nothing.

Each case runs `kdel.cli.main.main([...])` in-process and checks the exit code, that stderr holds exactly one
`kdel: error:` line (and nothing that is not a `kdel:` line, so no traceback), and that every file that
existed before (the tiny KG, the session's trained model, and the whole workspace: facts files, notes,
the --out target) is byte-identical afterwards, with nothing added.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest

from kdel.cli.main import main

TRIPLE_PROMPT = {"subject": "Ann Lee", "prompt": "Ann Lee lives in", "target": "Rome", "relation": "lives_in"}


@dataclass
class Case:
    id: str
    args: Callable[[SimpleNamespace], list]
    code: int
    needle: str  # must occur in the error line
    setup: Callable[[SimpleNamespace], Callable[[], None] | None] | None = None
    slow: bool = False


def _facts(path: Path, rows: list, raw: str | None = None) -> Path:
    path.write_text(raw if raw is not None else "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _workspace(root: Path, kg_src: Path, model: Path) -> SimpleNamespace:
    """Everything a case may point at: a KG copy, facts files good and bad, a user's notes, kdel outputs."""
    from synth_kg import KnowledgeGraph

    from kdel.facts import export_kg_facts

    w = SimpleNamespace(root=root, model=model, kg=root / "kg")
    shutil.copytree(kg_src, w.kg)
    w.facts = root / "facts.jsonl"
    export_kg_facts(KnowledgeGraph.load(w.kg), w.facts)
    rows = [json.loads(x) for x in w.facts.read_text().splitlines()[:4]]
    w.n_facts = len(w.facts.read_text().splitlines())
    w.notes = root / "notes"
    w.notes.mkdir()
    (w.notes / "todo.txt").write_text("my only copy of the plan\n")
    w.note_file = root / "notes.txt"
    w.note_file.write_text("a file the user keeps\n")
    conflict = dict(rows[0], target=rows[1]["target"] if rows[1]["target"] != rows[0]["target"] else "Zed")
    w.conflict = _facts(root / "conflict.jsonl", [rows[0], rows[2], conflict])
    same_prompt = {k: v for k, v in conflict.items() if k != "relation"}
    w.conflict_prompt = _facts(root / "conflict_prompt.jsonl", [rows[0], rows[2], same_prompt])
    w.trailing = _facts(root / "trailing.jsonl", [rows[0], dict(rows[1], prompt=rows[1]["prompt"] + " ")])
    w.blank = _facts(root / "blank.jsonl", [], raw=json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    (root / "binary.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    w.binary = root / "binary.jsonl"
    w.hparams = root / "hp" / "rome.yaml"
    w.hparams.parent.mkdir()
    w.hparams.write_text("kl_weight: 0.0625\n")
    # outputs kdel wrote before: a trace directory, a trained model's marker files, an audit
    w.trace = root / "old_trace"
    w.trace.mkdir()
    (w.trace / "traces.jsonl").write_text(json.dumps({"format": "kdel-trace/1"}) + "\n")
    w.old_model = root / "old_model"
    w.old_model.mkdir()
    (w.old_model / "kdel_model.json").write_text(json.dumps({"format": "kdel-model/1"}))
    (w.old_model / "train_report.json").write_text("{}")
    (w.old_model / "model.safetensors").write_bytes(b"weights the user trained for a day")
    w.audit = root / "audit"
    (w.audit / "cases").mkdir(parents=True)
    (w.audit / "audit_config.json").write_text(json.dumps({"format": "kdel-audit-config/1"}))
    (w.audit / "cases" / "abc.json").write_text(json.dumps({"format": "kdel-case/1"}))
    w.new = root / "new_out"  # a fresh --out: must not appear
    return w


def _tree(*roots: Path) -> dict[str, str]:
    """Path -> sha256 of every file (and 'dir' for every directory) under `roots`."""
    out = {}
    for root in roots:
        out[str(root)] = "dir" if root.is_dir() else hashlib.sha256(root.read_bytes()).hexdigest()
        for dirpath, dirnames, filenames in os.walk(root):
            for d in dirnames:
                out[os.path.join(dirpath, d)] = "dir"
            for f in filenames:
                p = os.path.join(dirpath, f)
                with open(p, "rb") as fh:
                    out[p] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _hold_lock(w):
    from kdel.outputs import DirLock

    lock = DirLock(w.root / "run").acquire()
    return lock.release


def _m(w):  # --model and --kg of the session's trained model
    return ["--model", w.model, "--kg", w.kg]


CASES = [
    # -- --out is an input (always refused, --force or not)
    Case("trace-out-is-model", lambda w: ["trace", *_m(w), "--out", w.model], 2, "is the input"),
    Case("trace-out-inside-model", lambda w: ["trace", *_m(w), "--out", w.model / "traces"], 2, "inside the input"),
    Case("trace-out-contains-kg", lambda w: ["trace", *_m(w), "--out", w.root], 2, "holding the input"),
    Case("train-out-is-kg", lambda w: ["train", "--kg", w.kg, "--out", w.kg, "--quiet"], 2, "is the input"),
    Case("train-out-inside-kg", lambda w: ["train", "--kg", w.kg, "--out", w.kg / "m", "--quiet"], 2, "inside"),
    Case("export-facts-into-kg", lambda w: ["kg", "export-facts", w.kg, w.kg / "kg.json"], 2, "inside the input"),
    Case("export-facts-into-kg-force", lambda w: ["kg", "export-facts", w.kg, w.kg / "kg.json", "--force"], 2,
         "inside the input"),
    Case("delete-out-is-model", lambda w: ["delete", *_m(w), "--fact", "0", "--out", w.model], 2, "is the input"),
    Case("delete-out-is-facts", lambda w: ["delete", "--model", w.model, "--facts", w.facts, "--fact", "0",
                                           "--out", w.facts], 2, "is the input"),
    Case("delete-out-holds-hparams", lambda w: ["delete", *_m(w), "--fact", "0", "--hparams", w.hparams,
                                                "--out", w.hparams.parent], 2, "holding the input"),
    Case("audit-out-is-model", lambda w: ["audit", *_m(w), "--out", w.model, "--quiet"], 2, "is the input"),
    Case("stats-plot-into-kg", lambda w: ["kg", "stats", w.kg, "--plot", w.kg / "deg.png"], 2, "inside the input"),
    Case("report-out-into-cases", lambda w: ["report", w.audit, "--out", w.audit / "cases" / "r.html"], 2,
         "inside the input"),
    # -- --out is somebody else's data
    Case("train-out-notes", lambda w: ["train", "--kg", w.kg, "--out", w.notes, "--quiet"], 2,
         "not a kdel trained model directory"),
    Case("trace-out-notes", lambda w: ["trace", *_m(w), "--out", w.notes], 2, "not a kdel trace directory"),
    Case("delete-out-notes", lambda w: ["delete", *_m(w), "--fact", "0", "--out", w.notes], 2,
         "not a kdel edited model directory"),
    Case("pipeline-out-notes", lambda w: ["pipeline", "--out", w.notes, "--preset", "test", "--quiet"], 2,
         "not a kdel pipeline run directory"),
    Case("audit-out-notes", lambda w: ["audit", *_m(w), "--out", w.notes, "--quiet"], 2, "not a kdel audit"),
    Case("generate-out-notes", lambda w: ["kg", "generate", "--out", w.notes], 2, "not a kdel KG bundle"),
    Case("trace-out-existing-file", lambda w: ["trace", *_m(w), "--out", w.note_file], 2, "is a file"),
    Case("generate-out-existing-file", lambda w: ["kg", "generate", "--out", w.note_file], 2, "is a file"),
    Case("pipeline-out-existing-file", lambda w: ["pipeline", "--out", w.note_file, "--quiet"], 2, "is a file"),
    Case("export-facts-existing-file", lambda w: ["kg", "export-facts", w.kg, w.note_file], 2, "--force"),
    Case("report-out-existing-file", lambda w: ["report", w.audit, "--out", w.note_file], 2, "--force"),
    Case("report-plots-notes", lambda w: ["report", w.audit, "--out", w.root / "r.html", "--plots", w.notes], 2,
         "choose another --plots"),
    Case("train-out-is-a-trace", lambda w: ["train", "--kg", w.kg, "--out", w.trace, "--quiet"], 2,
         "not a kdel trained model"),
    Case("delete-out-is-a-trained-model", lambda w: ["delete", *_m(w), "--fact", "0", "--out", w.old_model], 2,
         "not a kdel edited model"),
    # -- training that cannot work
    Case("train-lr-inf", lambda w: ["train", "--kg", w.kg, "--out", w.new, "--lr", "inf", "--quiet"], 2, "--lr"),
    Case("train-lr-nan", lambda w: ["train", "--kg", w.kg, "--out", w.new, "--lr", "nan", "--quiet"], 2, "--lr"),
    Case("train-lr-negative", lambda w: ["train", "--kg", w.kg, "--out", w.new, "--lr", "-1", "--quiet"], 2, "--lr"),
    Case("train-lr-1e6", lambda w: ["train", "--kg", w.kg, "--out", w.new, "--lr", "1e6", "--quiet"], 1,
         "training diverged at step"),
    Case("train-lr-1e6-over-a-model", lambda w: ["train", "--kg", w.kg, "--out", w.old_model, "--lr", "1e6",
                                                 "--quiet"], 1, "try a lower --lr"),
    # -- facts files
    Case("facts-conflicting-targets", lambda w: ["trace", "--model", w.model, "--facts", w.conflict,
                                                 "--out", w.new], 2, "lines 1 and 3"),
    Case("facts-conflicting-prompt", lambda w: ["delete", "--model", w.model, "--facts", w.conflict_prompt,
                                                "--fact", "0", "--out", w.new], 2, "lines 1 and 3"),
    Case("facts-trailing-space", lambda w: ["trace", "--model", w.model, "--facts", w.trailing, "--out", w.new],
         2, "trailing.jsonl:2: prompt"),
    Case("facts-blank-line", lambda w: ["delete", "--model", w.model, "--facts", w.blank, "--fact", "0",
                                        "--out", w.new], 2, "blank.jsonl:2: blank line"),
    Case("facts-not-utf8", lambda w: ["trace", "--model", w.model, "--facts", w.binary, "--out", w.new], 2,
         "not UTF-8"),
    Case("facts-fact-id-wording", lambda w: ["trace", "--model", w.model, "--facts", w.facts, "--fact", "999",
                                             "--out", w.new], 2, "valid fact ids (0-based line numbers) are 0.."),
    # -- --model naming a file, or nothing
    Case("trace-model-is-a-file", lambda w: ["trace", "--model", w.note_file, "--kg", w.kg, "--out", w.new], 2,
         "is a file, not a model directory"),
    Case("delete-model-is-a-file", lambda w: ["delete", "--model", w.note_file, "--kg", w.kg, "--fact", "0",
                                              "--out", w.new], 2, "is a file, not a model directory"),
    Case("audit-model-missing", lambda w: ["audit", "--model", w.root / "nope", "--kg", w.kg, "--out", w.new,
                                           "--quiet"], 2, "does not exist"),
    # -- pipeline settings, checked before stage 1; one writer per run directory
    Case("pipeline-set-methods-foo", lambda w: ["pipeline", "--out", w.new, "--set", "methods=foo", "--quiet"], 2,
         "unknown method 'foo'"),
    Case("pipeline-set-sites", lambda w: ["pipeline", "--out", w.new, "--set", "sites=middle", "--quiet"], 2,
         "unknown edit site"),
    Case("pipeline-set-layers", lambda w: ["pipeline", "--out", w.new, "--set", "layers=9", "--quiet"], 2,
         "layer 9 is out of range"),
    Case("pipeline-set-graphs", lambda w: ["pipeline", "--out", w.new, "--set", "graphs=ws", "--quiet"], 2,
         "unknown graph topology"),
    Case("pipeline-set-objective", lambda w: ["pipeline", "--out", w.new, "--set", "objective=forget", "--quiet"],
         2, "objective"),
    Case("pipeline-set-components", lambda w: ["pipeline", "--out", w.new, "--set", "trace_components=head",
                                               "--quiet"], 2, "unknown component"),
    Case("pipeline-locked", lambda w: ["pipeline", "--out", w.root / "run", "--preset", "test", "--quiet"], 2,
         f"in use by another kdel process (pid {os.getpid()})", setup=_hold_lock),
    # -- the earlier bad-input list (tests/integration/test_cli_*.py)
    Case("delete-unknown-method", lambda w: ["delete", *_m(w), "--fact", "0", "--method", "nope", "--out", w.new],
         2, "unknown method 'nope'"),
    Case("delete-fact-not-in-kg", lambda w: ["delete", *_m(w), "--fact", "100000", "--out", w.new], 2,
         "fact 100000 does not exist: valid triple ids are 0.."),
    Case("delete-same-fact-twice", lambda w: ["delete", *_m(w), "--fact", "1", "--fact", "1", "--out", w.new], 2,
         "given twice"),
    Case("trace-bad-corruption", lambda w: ["trace", *_m(w), "--corruption", "xx", "--out", w.new], 2,
         "unknown corruption"),
    Case("train-unknown-preset", lambda w: ["train", "--kg", w.kg, "--out", w.new, "--preset", "huge"], 2,
         "unknown preset"),
    Case("generate-one-entity", lambda w: ["kg", "generate", "--out", w.new, "--entities", "1"], 2, "--entities"),
    Case("audit-unknown-method", lambda w: ["audit", *_m(w), "--out", w.new, "--methods", "nope", "--quiet"], 2,
         "unknown method 'nope'"),
    Case("stats-missing-kg", lambda w: ["kg", "stats", w.root / "missing"], 2, "does not exist"),
    Case("train-kg-is-a-file", lambda w: ["train", "--kg", w.note_file, "--out", w.new], 2, "not a directory"),
]


@pytest.fixture
def workspace(tmp_path, tiny_kg_dir, trained_model_dir, monkeypatch):
    monkeypatch.setenv("KDEL_CACHE_DIR", str(tmp_path / "cache"))
    return _workspace(tmp_path / "ws", tiny_kg_dir, trained_model_dir)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else [])
                                  for c in CASES])
def test_misuse_exits_with_one_line_and_loses_nothing(case, workspace, capsys):
    w = workspace
    cleanup = case.setup(w) if case.setup else None
    try:
        before = _tree(w.root, w.model)
        code = main([str(a) for a in case.args(w)])
        after = _tree(w.root, w.model)
    finally:
        if cleanup:
            cleanup()
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("kdel: error:")]
    assert code == case.code, err
    assert len(errors) == 1 and case.needle in errors[0], err
    assert "Traceback" not in err and all(ln.startswith("kdel: ") for ln in lines), err
    changed = sorted(p for p in before if after.get(p) != before[p])
    added = sorted(set(after) - set(before))
    assert not changed and not added, f"changed: {changed}, added: {added}"


def test_the_table_is_long_enough():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


def test_every_from_pretrained_in_kdel_is_local_only():
    """The Python API never reaches the network: each from_pretrained call in kdel/ passes local_files_only."""
    import re

    root = Path(__file__).resolve().parents[2] / "kdel"
    calls = []
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"\.from_pretrained\(", text):
            depth, i = 1, m.end()
            while depth and i < len(text):
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            calls.append((path.name, text[m.end():i]))
    assert calls, "no from_pretrained call found: the scan is broken"
    missing = [name for name, args in calls if "local_files_only=True" not in args]
    assert not missing, missing
