"""The README's configuration table and .env.example list every variable memoryd reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
READ = re.compile(r'e\.\w+\(\s*"([A-Z][A-Z0-9_]+)"')


def _variables() -> set[str]:
    names = set(READ.findall((ROOT / "memoryd" / "config.py").read_text()))
    assert len(names) > 20, "the pattern no longer finds the variables in config.py"
    return names


@pytest.mark.parametrize("document", ["README.md", ".env.example"])
def test_every_variable_is_documented(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = sorted(name for name in _variables() if name not in text)
    assert not missing, f"{document} does not mention {missing}"


# -- links ---------------------------------------------------------------------------------

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose(text: str) -> str:
    """The text without code blocks and code spans, where brackets are not links."""
    return CODE.sub("", FENCE.sub("", text))


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, -1, -2 for
    repeats."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in FENCE.sub("", markdown).splitlines():
        match = re.match(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line)
        if not match:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match[1])  # a link keeps its text
        slug = re.sub(r"[^\w\- ]", "", text.replace("`", "").lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _broken_links(document: Path, root: Path = ROOT) -> list[str]:
    root = root.resolve()
    text = _prose(document.read_text())
    broken = []
    for link in LINK.findall(text) + REFERENCE.findall(text):
        if SCHEME.match(link) or link.startswith("//"):
            continue
        target, _, fragment = link.partition("#")
        if target.startswith("/"):  # GitHub reads these from the repository's root
            path = (root / target.lstrip("/")).resolve()
        else:
            path = (document.parent / target).resolve() if target else document
        if not path.is_relative_to(root):
            broken.append(f"{link}: outside the repository")
        elif not path.exists():
            broken.append(f"{link}: no such file")
        elif fragment and path.suffix == ".md" and fragment not in _anchors(path.read_text()):
            broken.append(f"{link}: {path.name} has no heading #{fragment}")
    return broken


def test_the_link_checker_finds_what_is_broken(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A `code` title: ok?\n## Two words\n## Two words\n")
    (tmp_path / "p.png").write_bytes(b"")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Top\n"
        '[fine](docs/a.md#two-words-1), [also](docs/a.md#a-code-title-ok), ![p](p.png "t"),\n'
        "[here](#top), [web](https://example.org/x.md), `[code](nowhere.md)`\n"
        "```\n[fenced](nowhere.md)\n```\n"
        "[missing](docs/b.md) [anchor](docs/a.md#three-words) [away](../../etc/hosts)\n"
        "[absolute](/work/shared/DESIGN.md)\n"
        "[ref]: docs/a.md#nope\n"
    )
    assert _broken_links(readme, tmp_path) == [
        "docs/b.md: no such file",
        "docs/a.md#three-words: a.md has no heading #three-words",
        "../../etc/hosts: outside the repository",
        "/work/shared/DESIGN.md: no such file",
        "docs/a.md#nope: a.md has no heading #nope",
    ]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(document: Path) -> None:
    broken = _broken_links(document)
    assert not broken, f"{document.relative_to(ROOT)}: {broken}"
