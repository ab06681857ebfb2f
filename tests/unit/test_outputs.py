"""The output rule (kdel.outputs): what may be written where, and the one-writer lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kdel.errors import UserError
from kdel.io import staged_dir
from kdel.outputs import LOCK_FILE, DirLock, check_not_input, check_out_dir, check_out_file, is_kind


def _audit(d):
    d.mkdir(parents=True, exist_ok=True)
    (d / "audit_config.json").write_text(json.dumps({"format": "kdel-audit-config/1"}))
    return d


def test_missing_and_empty_directories_are_accepted(tmp_path):
    assert check_out_dir(tmp_path / "new", "audit") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty", "trace")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / LOCK_FILE).write_text("123\n")
    check_out_dir(tmp_path / "locked", "audit")  # a lone lock file counts as empty


def test_unrelated_directory_and_file_are_refused(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("my notes")
    with pytest.raises(UserError, match="not a kdel audit directory"):
        check_out_dir(notes, "audit")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        check_out_dir(f, "trace")


def test_same_kind_is_accepted_other_kind_refused(tmp_path):
    a = _audit(tmp_path / "a")
    check_out_dir(a, "audit")
    with pytest.raises(UserError, match="not a kdel trace directory"):
        check_out_dir(a, "trace")
    # an audit whose config was deleted is still recognised by its case files
    (a / "audit_config.json").unlink()
    (a / "cases").mkdir()
    (a / "cases" / "abc.json").write_text(json.dumps({"format": "kdel-case/1"}))
    assert is_kind(a, "audit")
    # a trained model is not an edited model, and vice versa
    m = tmp_path / "m"
    m.mkdir()
    (m / "kdel_model.json").write_text(json.dumps({"format": "kdel-model/1"}))
    (m / "train_report.json").write_text("{}")
    assert is_kind(m, "model") and not is_kind(m, "edit")
    with pytest.raises(UserError):
        check_out_dir(m, "edit")


@pytest.mark.parametrize("rel", ["same", "inside", "contains"])
def test_output_overlapping_an_input_is_refused(tmp_path, rel):
    model = tmp_path / "model"
    model.mkdir()
    out = {"same": model, "inside": model / "sub", "contains": tmp_path}[rel]
    with pytest.raises(UserError, match="refusing"):
        check_out_dir(out, "trace", inputs=[model])
    if rel != "contains":  # a file cannot contain a directory
        with pytest.raises(UserError, match="refusing"):
            check_out_file(out / "x.jsonl" if rel == "inside" else model, inputs=[model], force=True)


def test_symlinked_input_is_seen_through(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    link = tmp_path / "link"
    link.symlink_to(model)
    with pytest.raises(UserError):
        check_not_input(link, [model])


def test_file_outputs(tmp_path):
    f = tmp_path / "facts.jsonl"
    check_out_file(f)
    f.write_text("{}\n")
    with pytest.raises(UserError, match="--force"):
        check_out_file(f)
    check_out_file(f, force=True)
    check_out_file(f, recognise=lambda p: True)
    with pytest.raises(UserError, match="directory"):
        check_out_file(tmp_path, force=True)


def test_staged_dir_replaces_only_on_success(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_dir(final) as s:
            (s / "new.txt").write_text("new")
            raise RuntimeError("boom")
    assert (final / "old.txt").read_text() == "old" and not (final / "new.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging directory left behind
    with staged_dir(final) as s:
        (s / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]


def test_lock_is_exclusive_and_released(tmp_path):
    with DirLock(tmp_path / "run"):
        assert (tmp_path / "run" / LOCK_FILE).read_text().strip() == str(os.getpid())
        # flock is per open file description: a second acquisition in this process conflicts too
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            DirLock(tmp_path / "run").acquire()
    with DirLock(tmp_path / "run"):
        pass


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    d = tmp_path / "run"
    code = ("import sys, time; from kdel.outputs import DirLock; DirLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd()] + sys.path)}
    p = subprocess.Popen([sys.executable, "-c", code, str(d)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"pid {p.pid}"):
            DirLock(d).acquire()
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        t0 = time.time()
        with DirLock(d):  # the kernel released the dead holder's lock
            assert (d / LOCK_FILE).read_text().strip() == str(os.getpid())
        assert time.time() - t0 < 5
    finally:
        if p.poll() is None:
            p.kill()
