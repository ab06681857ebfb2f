"""report.html in headless Chromium: every embedded figure decodes (naturalWidth > 0) and a screenshot renders.

Skipped (with the reason) only when Debian's `chromium` is not installed; .ci/run installs it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
# Appended to a COPY of the report (the report itself has no script): after load, write each image's
# natural size into the DOM, which --dump-dom then prints.
CHECK_SCRIPT = ("<script>window.addEventListener('load',function(){var r=[];for(var i=0;i<document.images.length;"
                "i++){var m=document.images[i];r.push({w:m.naturalWidth,h:m.naturalHeight,alt:m.alt});}"
                "var d=document.createElement('pre');d.id='img-check';d.textContent=JSON.stringify(r);"
                "document.body.appendChild(d);});</script>")


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    exe = chromium_path()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); .ci/run installs it")
    profile = tmp / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)


def check_report_in_browser(html_path: Path, tmp: Path, screenshot: Path | None = None) -> list[dict]:
    """Natural sizes of every <img> of the report as Chromium decoded them; optionally a screenshot."""
    html = html_path.read_text(encoding="utf-8")
    n_expected = html.count("<img ")
    probe = tmp / "report_check.html"
    probe.write_text(html.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    res = _chromium(["--dump-dom", probe.resolve().as_uri()], tmp)
    m = re.search(r'<pre id="img-check">(.*?)</pre>', res.stdout, re.S)
    assert m, f"chromium printed no image check (rc {res.returncode}): {res.stderr[-500:]}"
    import html as _html

    images = json.loads(_html.unescape(m.group(1)))
    assert len(images) == n_expected and n_expected > 0
    bad = [i for i in images if i["w"] <= 0 or i["h"] <= 0]
    assert not bad, f"figures that did not decode: {bad}"
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        res = _chromium([f"--screenshot={screenshot}", "--window-size=1280,4000", html_path.resolve().as_uri()], tmp)
        assert screenshot.exists() and screenshot.stat().st_size > 10_000, res.stderr[-500:]
    return images


def test_report_renders_in_headless_chromium(tmp_path):
    from kdel.report.html import render_report
    from tests.synthetic_cases import synthetic_cases
    from tests.unit.test_report import write_audit

    if chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); .ci/run installs it")
    ba = write_audit(tmp_path / "ba" / "audit", synthetic_cases(n_facts=12, degree_effect=0.02, seed=1))
    er = write_audit(tmp_path / "er" / "audit", synthetic_cases(n_facts=12, degree_effect=0.0, seed=2))
    res = render_report(tmp_path, tmp_path / "out" / "report.html")
    shot = tmp_path / "shot.png"
    images = check_report_in_browser(res.html_path, tmp_path, screenshot=shot)
    assert len(images) == len(res.plots) >= 4
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[1] == 1280 and img[..., :3].std() > 0.05  # the page painted something
    assert [a.label for a in res.audits] == ["BA", "ER"] and ba.exists() and er.exists()
