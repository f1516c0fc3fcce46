"""Every relative link of the README and of the markdown under ``docs/`` reaches a file, and
an ``#anchor`` a heading of its page, under GitHub's rules for heading anchors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target) or [text](target "title"); an image's ![alt](target) alike
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def prose_lines(text: str) -> list[str]:
    """The lines of a page outside fenced code blocks, where links and headings are read."""
    lines: list[str] = []
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its rendered text lowercased, punctuation but ``-`` and
    ``_`` dropped, each space a hyphen."""
    text = CODE_SPAN.sub(lambda m: m[2], heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link shows its text
    text = re.sub(r"[*]", "", text).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of ``page``; a repeated one gets ``-1``, ``-2``, ... as on GitHub."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in prose_lines(page.read_text()):
        heading = HEADING.match(line)
        if heading is None:
            continue
        base = slug(heading[1])
        anchor = base if base not in seen else f"{base}-{seen[base]}"
        seen[base] = seen.get(base, 0) + 1
        found.add(anchor)
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file, or whose heading, does not exist."""
    broken: list[str] = []
    for line in prose_lines(page.read_text()):
        for match in LINK.finditer(CODE_SPAN.sub("", line)):
            target = match[1]
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                continue  # http:, https:, mailto: ... : not a file of the repository
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{target}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{target}: no such heading")
    return broken


def test_slugs_follow_github() -> None:
    assert slug("Table 2 on the `content+id` victim (primary pair)") == (
        "table-2-on-the-contentid-victim-primary-pair"
    )
    assert slug("CopyAttack trained across targets, and on a surrogate") == (
        "copyattack-trained-across-targets-and-on-a-surrogate"
    )
    assert slug("The attacker's SDK") == "the-attackers-sdk"
    assert slug("Item-kNN and MF: **`mf_fold_in`**") == "item-knn-and-mf-mf_fold_in"


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# A heading\n\n```\n# not a heading\n```\n## A heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Top\n\n[ok](other.md#a-heading) [self](#top) [web](https://example.org/x)\n"
        "[repeated](other.md#a-heading-1) [not repeated](other.md#a-heading-2)\n"
        "[gone](missing.md) [no heading](other.md#not-a-heading) `[code](missing.md)`\n"
        "```\n[fenced](missing.md)\n```\n"
    )
    assert broken_links(page) == [
        "other.md#a-heading-2: no such heading",
        "missing.md: no such file",
        "other.md#not-a-heading: no such heading",
    ]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []
