"""The documentation matches the code: the settings table, and the links between pages."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from guest_queue.conf import DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_DOC = ROOT / "docs" / "settings.md"

# A table row whose first cell names a setting: | `GUEST_...` | default | meaning |
SETTING_ROW = re.compile(r"^\|\s*`(GUEST_[A-Z0-9_]+)`\s*\|")
LITERAL = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")


def cells(row: str) -> list[str]:
    """A markdown table row's cells; ``\\|`` is a pipe inside a cell."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def documented_defaults(page: Path = SETTINGS_DOC) -> dict[str, Any]:
    """Each setting in a page's tables with its default parsed as a Python value."""
    found: dict[str, Any] = {}
    for line in page.read_text().splitlines():
        if not SETTING_ROW.match(line):
            continue
        name, default, *_meaning = cells(line)
        key = name.strip("`")
        assert key not in found, f"{key} is listed twice"
        if default == "empty":
            found[key] = ""
            continue
        literal = LITERAL.match(default)
        assert literal is not None, f"{key}: the default {default!r} is not a `literal` or empty"
        found[key] = ast.literal_eval(literal[1])
    return found


@pytest.mark.parametrize("page", [SETTINGS_DOC, ROOT / "README.md"], ids=lambda p: p.name)
def test_the_page_lists_every_setting_with_its_default(page: Path) -> None:
    documented = documented_defaults(page)
    assert sorted(documented) == sorted(DEFAULTS), (
        f"missing from {page.name}: {sorted(set(DEFAULTS) - set(documented))}; "
        f"not settings: {sorted(set(documented) - set(DEFAULTS))}"
    )
    for key, default in DEFAULTS.items():
        assert documented[key] == default and type(documented[key]) is type(default), (
            f"{key}: {page.name} says {documented[key]!r}, conf.DEFAULTS has {default!r}"
        )


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
)
def test_links_between_pages_resolve(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if "://" not in target:
            assert (page.parent / target).is_file(), f"{page.name} links to missing {target}"


def test_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"
