"""Every relative link of README.md and docs/*.md points to a file, and to a heading there.

Why: the pages are split and files move; a link to a section that no longer exists (the
mapping page once pointed to a "Context documents" section nobody wrote) is found here,
not by a reader. Anchors follow GitHub's rule for headings.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans (links there are not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: its text, lower case, punctuation dropped, ``-`` for spaces."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown file has (repeated headings get ``-1``, ``-2``, ...)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text())):
        base = anchor(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(path: Path) -> list[str]:
    return _LINK.findall(prose(path.read_text()))


def test_the_anchor_rule_is_githubs() -> None:
    assert anchor("Continuing runs (`resume`)") == "continuing-runs-resume"
    assert anchor("`EvalLog` header") == "evallog-header"
    assert anchor("### `sample_end`".lstrip("# ")) == "sample_end"
    assert anchor("What you see in MLflow") == "what-you-see-in-mlflow"


def test_links_are_found_outside_code_only() -> None:
    text = "[a](x.md) `[b](y.md)` ![img](images/p.png)\n```\n[c](z.md)\n```\n"
    assert _LINK.findall(prose(text)) == ["x.md", "images/p.png"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        destination = (page.parent / unquote(file_part)).resolve() if file_part else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif fragment and destination.suffix == ".md":
            if unquote(fragment) not in anchors(destination):
                broken.append(f"{target}: no such heading in {destination.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_configuration_page_names_every_variable_the_settings_read() -> None:
    source = (ROOT / "inspect_mlflow" / "_config.py").read_text()
    variables = set(re.findall(r"\"((?:INSPECT_MLFLOW|MLFLOW|DATABRICKS)_[A-Z_]+)\"", source))
    assert "MLFLOW_TRACKING_URI" in variables
    page = (ROOT / "docs" / "configuration.md").read_text()
    missing = sorted(v for v in variables if f"`{v}`" not in page)
    assert not missing, f"docs/configuration.md does not name {missing}"


def mapping_blocks(page: Path) -> list[str]:
    """The YAML blocks of a page that are whole mappings (they start with ``version``)."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", page.read_text(), re.M | re.S)
    return [b for b in blocks if re.search(r"^version: \d+$", b, re.M)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_whole_mapping_shown_loads_without_likely_typos(page: Path) -> None:
    from inspect_mlflow._inspect.payload_fields import field_typos
    from inspect_mlflow._mapping import load_mapping_text

    for text in mapping_blocks(page):
        mapping = load_mapping_text(text, str(page))  # raises with file:line:col
        assert [t.message for t in field_typos(mapping)] == [], text


def test_the_readme_shows_a_mapping() -> None:
    assert mapping_blocks(ROOT / "README.md")
