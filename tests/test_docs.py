"""The README is the front door to docs/: every docs page is in its index, and every relative link of
the README, the CHANGELOG, docs/ and weights/README.md reaches a file (and a heading, for a #anchor)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", REPO_ROOT / "CHANGELOG.md", REPO_ROOT / "weights" / "README.md",
         *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    headings = re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_docs_page_is_in_the_readme_index():
    readme = (REPO_ROOT / "README.md").read_text()
    index = readme[readme.index("## Docs"):]
    linked = {Path(target.split("#")[0]).name for target in LINK.findall(index)}
    missing = sorted(p.name for p in (REPO_ROOT / "docs").glob("*.md") if p.name not in linked)
    assert not missing, f"docs pages missing from the README's docs index: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_reach_a_file_and_heading(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO_ROOT)}: links to nothing: {broken}"
