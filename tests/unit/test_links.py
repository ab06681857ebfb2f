"""Every relative link in README.md, docs/ and experiments/ resolves to a file or directory of the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "experiments").rglob("*.md"))]


def relative_links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # links inside code blocks are not links
    text = re.sub(r"`[^`\n]*`", "", text)  # nor inside inline code
    out = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http:, mailto:, in-page anchors
        out.append(target.split("#", 1)[0])
    return out


def test_the_link_finder_finds_links():
    assert relative_links("see [a](docs/a.md#x), [b](https://x.y), [c](#here), `[d](e.md)`\n```\n[f](g.md)\n```") \
        == ["docs/a.md"]


def test_every_relative_link_resolves():
    broken = []
    files = markdown_files()
    assert (ROOT / "README.md") in files and len(files) > 5
    for md in files:
        for target in relative_links(md.read_text()):
            if not (md.parent / target).exists():
                broken.append(f"{md.relative_to(ROOT)}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)
