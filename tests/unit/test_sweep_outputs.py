"""`kdel sweep` outputs without a model: cases.csv from case dicts, the stage records' reuse rule, the
RESULTS.md copy rule."""

from __future__ import annotations

import csv
import io

import pytest


def _config(tmp_path):
    from kdel.sweep.config import load_config

    p = tmp_path / "c.yaml"
    p.write_text("name: t\nseeds: 2\ndefaults: {entities: 30}\nconditions:\n  - name: c\n"
                 "    vary: {topology: [ba, er]}\nanalyses: {hase: false}\n", encoding="utf-8")
    return load_config(p)


def _cases(seed: int, n: int = 6, errors: int = 1):
    from tests.unit.test_sweep_synthetic import planted_cases

    return planted_cases(n_facts=n, slope=0.01, seed=seed, n_errors=errors)


def test_cases_csv_one_row_per_case_and_group(tmp_path):
    from kdel.sweep.collect import COLUMNS, cases_csv_text

    cfg = _config(tmp_path)
    by_cell = {("c-ba", 0): _cases(0), ("c-er", 1): _cases(1, errors=0)}
    rows = list(csv.DictReader(io.StringIO(cases_csv_text(cfg, by_cell))))
    assert list(rows[0]) == list(COLUMNS)
    want = sum(len(c["groups"]) if c["status"] == "ok" else 1 for cases in by_cell.values() for c in cases)
    assert len(rows) == want
    err = [r for r in rows if r["status"] == "error"]
    assert len(err) == 1 and err[0]["group"] == "" and err[0]["error"] and err[0]["success"] == ""
    ok = [r for r in rows if r["status"] == "ok" and r["group"] == "same_subject"]
    case = next(c for c in by_cell[("c-ba", 0)] if c["case_id"] == ok[0]["case_id"])
    assert float(ok[0]["mean_p_drop"]) == case["groups"]["same_subject"]["mean_p_drop"]  # repr round-trips
    assert ok[0]["success"] in ("0", "1") and ok[0]["topology"] in ("ba", "er")
    assert {r["condition"] for r in rows} == {"c-ba", "c-er"} and {r["seed"] for r in rows} == {"0", "1"}


def test_stage_record_reuse_rule(tmp_path):
    from kdel.errors import UserError
    from kdel.io import atomic_write_json
    from kdel.sweep.grid import Job, inputs_key
    from kdel.sweep.stages import STAGE_FILE, STAGE_FORMAT, clean_stale, job_done

    inputs = {"kind": "kg", "kg": {"topology": "ba", "entities": 12, "seed": 0, "relations": "auto"}}
    job = Job("kg", inputs_key(inputs), inputs)
    out = tmp_path / "sweep"
    assert not job_done(job, out)  # nothing there
    d = job.dir(out)
    from synth_kg import KGConfig, generate

    generate(KGConfig(**inputs["kg"])).save(d)
    assert not job_done(job, out)  # output without a record: a run killed before it finished
    atomic_write_json(d / STAGE_FILE, {"format": STAGE_FORMAT, "inputs": inputs})
    assert job_done(job, out)
    (d / "kg.json").write_text("{")  # a broken output is not finished
    assert not job_done(job, out)
    atomic_write_json(d / STAGE_FILE, {"format": STAGE_FORMAT, "inputs": {**inputs, "kg": {}}})
    with pytest.raises(UserError, match="records other inputs"):
        job_done(job, out)
    stale = out / "kgs" / f".{job.key}.abc.staging"
    stale.mkdir()
    keep = out / "kgs" / "notes"
    keep.mkdir()
    assert clean_stale(out) == [stale] and keep.exists()


def test_results_md_copy_refuses_foreign_files(tmp_path):
    from kdel.errors import UserError
    from kdel.sweep.results_md import MARKER, check_destination, copy_results_md

    out = tmp_path / "sweep"
    (out / "figures").mkdir(parents=True)
    (out / "RESULTS.md").write_text(MARKER + "\n# r\n", encoding="utf-8")
    (out / "figures" / "a.png").write_bytes(b"png")
    dest = tmp_path / "exp" / "RESULTS.md"
    assert check_destination(dest, []) == dest
    copy_results_md(out, dest)
    assert dest.read_text(encoding="utf-8").startswith(MARKER) and (dest.parent / "figures" / "a.png").exists()
    assert check_destination(dest, []) == dest  # ours: may be rewritten
    mine = tmp_path / "mine" / "RESULTS.md"
    mine.parent.mkdir()
    mine.write_text("my notes", encoding="utf-8")
    with pytest.raises(UserError, match="refusing to overwrite"):
        check_destination(mine, [])
    other = tmp_path / "other" / "RESULTS.md"
    (other.parent / "figures").mkdir(parents=True)
    (other.parent / "figures" / "x.png").write_bytes(b"mine")
    with pytest.raises(UserError, match="refusing to write figures"):
        check_destination(other, [])


def test_results_md_shows_the_degree_figure_without_a_primary_hypothesis():
    from kdel.sweep.results_md import primary_section

    figs = ["figures/side_effect_vs_degree.png"]
    lines = primary_section(None, figs)
    assert "This config declares no primary hypothesis" in " ".join(lines)
    assert any(ln.startswith("![") and "figures/side_effect_vs_degree.png" in ln for ln in lines)
    assert not any(ln.startswith("![") for ln in primary_section(None, []))  # no figure drawn, no link
