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


def documented_defaults() -> dict[str, Any]:
    """Each setting in docs/settings.md with its default parsed as a Python value."""
    found: dict[str, Any] = {}
    for line in SETTINGS_DOC.read_text().splitlines():
        if not SETTING_ROW.match(line):
            continue
        name, default, _meaning = cells(line)
        key = name.strip("`")
        assert key not in found, f"{key} is listed twice"
        if default == "empty":
            found[key] = ""
            continue
        literal = LITERAL.match(default)
        assert literal is not None, f"{key}: the default {default!r} is not a `literal` or empty"
        found[key] = ast.literal_eval(literal[1])
    return found


def test_settings_doc_lists_every_setting_with_its_default() -> None:
    documented = documented_defaults()
    assert sorted(documented) == sorted(DEFAULTS), (
        f"missing from docs/settings.md: {sorted(set(DEFAULTS) - set(documented))}; "
        f"not settings: {sorted(set(documented) - set(DEFAULTS))}"
    )
    for key, default in DEFAULTS.items():
        assert documented[key] == default and type(documented[key]) is type(default), (
            f"{key}: docs/settings.md says {documented[key]!r}, conf.DEFAULTS has {default!r}"
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


# A uvicorn invocation: `uvicorn app:obj`, `.venv/bin/uvicorn app:obj`, `$(BIN)/uvicorn ...`,
# `python -m uvicorn ...`, or a list `["uvicorn", "app:obj", ...]` (a Kubernetes spec).
UVICORN = re.compile(r"""(?:^|[\s/"'`\[])uvicorn["']?\s*,?\s*["']?[\w.]+:\w+""")
FENCE = re.compile(r"^\s*```")
INLINE_CODE = re.compile(r"(?<!`)`([^`]+)`(?!`)")


def logical_lines(lines: list[str]) -> list[str]:
    """Lines joined across shell/Makefile continuations (``\\``) and open brackets."""
    joined: list[str] = []
    current = ""
    for line in lines:
        current = f"{current} {line.strip()}" if current else line.strip()
        if current.endswith("\\"):
            current = current[:-1].rstrip()
        elif current.count("[") <= current.count("]"):
            joined.append(current)
            current = ""
    if current:
        joined.append(current)
    return joined


def commands_in_markdown(text: str) -> list[str]:
    """Every command line in fenced blocks, and every inline code span, of a page."""
    blocks: list[str] = []
    fenced: list[str] | None = None
    prose: list[str] = []
    for line in text.splitlines():
        if FENCE.match(line):
            if fenced is None:
                fenced = []
            else:
                blocks += logical_lines(fenced)
                fenced = None
        elif fenced is not None:
            fenced.append(line)
        else:
            prose.append(line)
    # Inline spans may wrap across lines of a paragraph.
    blocks += [" ".join(span.split()) for span in INLINE_CODE.findall("\n".join(prose))]
    return blocks


def uvicorn_commands() -> dict[str, list[str]]:
    """Each uvicorn command line a reader may copy, by file: README, docs/, deploy/, make."""
    found: dict[str, list[str]] = {}
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        found[page.name] = commands_in_markdown(page.read_text())
    deploy = sorted(p for p in (ROOT / "deploy").rglob("*") if p.is_file())
    for path in [ROOT / "Makefile", *deploy]:
        found[str(path.relative_to(ROOT))] = logical_lines(path.read_text().splitlines())
    return {name: [line for line in lines if UVICORN.search(line)] for name, lines in found.items()}


def test_every_documented_uvicorn_command_says_whose_forwarded_headers_it_believes() -> None:
    # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise, proxy or not:
    # any process on the host could then pick the address every per-client limit keys on.
    commands = uvicorn_commands()
    # The places the docs name: each has its command, so the scan below sees them.
    for name in ["README.md", "deployment.md", "Makefile", "deploy/systemd/genestory@.service"]:
        assert commands[name], f"no uvicorn command found in {name}"
    unstated = [
        f"{name}: {line}"
        for name, lines in commands.items()
        for line in lines
        if "--forwarded-allow-ips" not in line and "--no-proxy-headers" not in line
    ]
    assert unstated == [], "state --forwarded-allow-ips or --no-proxy-headers:\n" + "\n".join(
        unstated
    )
