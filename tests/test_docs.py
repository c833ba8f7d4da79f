"""The documentation matches the code: the settings table, the links between pages, the
imports its examples make, the mount genestory runs, and no feature described as unbuilt."""

from __future__ import annotations

import ast
import importlib
import re
import textwrap
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
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)
# The README's machine-readable mount steps (tests/e2e/test_wheel.py applies them to a new site).
MOUNT_BLOCK = re.compile(
    r"^[ \t]*<!-- mount: (?P<name>[a-z]+) -->[ \t]*\n"
    r"(?P<indent>[ \t]*)```[a-z]*\n(?P<body>.*?)\n[ \t]*```",
    re.MULTILINE | re.DOTALL,
)
# Words that describe a feature as missing. The docs describe what runs; plans go in issues.
UNBUILT = re.compile(
    r"not (?:yet )?built|not built yet|not (?:yet )?implemented|\bTODO\b|\bplanned\b", re.I
)


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


@pytest.mark.parametrize(
    "page", [*PAGES, ROOT / "guest_queue" / "http" / "openapi.json"], ids=lambda p: p.name
)
def test_no_doc_describes_a_feature_as_not_built(page: Path) -> None:
    text = " ".join(page.read_text().split())  # a phrase may be wrapped across lines
    found = [text[max(m.start() - 60, 0) : m.end() + 20] for m in UNBUILT.finditer(text)]
    assert not found, f"{page.name} calls something unbuilt: {found}"


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """The page's ```python blocks (dedented) with the line each starts on."""
    text = page.read_text()
    return [
        (text.count("\n", 0, m.start()) + 1, textwrap.dedent(m["body"]))
        for m in PYTHON_BLOCK.finditer(text)
    ]


def guest_queue_names(tree: ast.AST) -> list[tuple[str, str | None]]:
    """(module, name) for every name a block takes from guest_queue; name None for ``import m``.

    ``import guest_queue.asgi`` followed by ``guest_queue.asgi.application(...)`` yields
    ``("guest_queue.asgi", "application")`` too.
    """
    found: list[tuple[str, str | None]] = []
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "guest_queue":
            found += [(str(node.module), alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "guest_queue":
                    found.append((alias.name, None))
                    modules.add(alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            dotted = ast.unparse(node)
            module, _, name = dotted.rpartition(".")
            if module in modules:
                found.append((module, name))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_examples_compile_and_import_names_that_exist(page: Path) -> None:
    for line, body in python_blocks(page):
        where = f"{page.name}:{line}"
        try:
            tree = ast.parse(body, filename=where)
        except SyntaxError as error:
            pytest.fail(f"{where}: the example does not compile: {error}")
        for module, name in guest_queue_names(tree):
            try:
                imported = importlib.import_module(module)
            except ImportError as error:
                pytest.fail(f"{where}: {module} cannot be imported: {error}")
            if name is not None:
                assert hasattr(imported, name), f"{where}: {module} has no {name}"


def mount_steps() -> dict[str, list[str]]:
    """The README's mount blocks by name: their lines, dedented, for genestory (not mysite)."""
    steps: dict[str, list[str]] = {}
    for match in MOUNT_BLOCK.finditer((ROOT / "README.md").read_text()):
        body = textwrap.dedent(match["body"]).replace("mysite", "genestory")
        steps[match["name"]] = [line for line in body.splitlines() if line.strip()]
    return steps


def code_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def test_genestory_mounts_the_app_exactly_as_the_readme_says() -> None:
    steps = mount_steps()
    assert set(steps) >= {"settings", "urls", "asgi", "shell"}, sorted(steps)
    # asgi: every line of the README's block, in order, in genestory/asgi.py (which may add
    # its own lines between them, such as its start-up checks).
    asgi = code_lines(ROOT / "genestory" / "asgi.py")
    remaining = iter(line.split("  #")[0].rstrip() for line in asgi)
    for line in steps["asgi"]:
        if line.lstrip().startswith("#"):
            continue
        assert any(line == candidate for candidate in remaining), (
            f"genestory/asgi.py does not have the README's line {line!r} (in this order)"
        )
    mounts = [line for line in asgi if line.startswith("application = ")]
    readme = [line for line in steps["asgi"] if line.startswith("application = ")]
    one_line = "application = guest_queue.asgi.application(get_asgi_application())"
    assert mounts == readme == [one_line]
    # urls: the README's include of the API is genestory's.
    urls = [line.strip().rstrip(",") for line in code_lines(ROOT / "genestory" / "urls.py")]
    api = [line.strip().rstrip(",") for line in steps["urls"] if "guest_queue.urls" in line]
    assert api and all(line in urls for line in api), api
    # settings: the same ASGI entry point, the app installed, its logger configured.
    settings_py = (ROOT / "genestory" / "settings.py").read_text()
    for line in steps["settings"]:
        if line.startswith("ASGI_APPLICATION"):
            assert line in settings_py.splitlines(), line
    assert '"guest_queue",' in settings_py
    assert '"loggers": {"guest_queue":' in settings_py


# A path in backticks: `guest_queue/lane.py`, `core/stream.py`, `core/backends/redis/`.
CODE_PATH = re.compile(r"`((?:[\w.-]+/)*[\w.-]+(?:\.py|\.json|/))`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_paths_of_the_code_named_in_docs_exist(page: Path) -> None:
    """Every ``guest_queue/…`` path a page names exists; architecture.md's are relative to it."""
    package = ROOT / "guest_queue"
    for path in CODE_PATH.findall(page.read_text()):
        if page.name == "architecture.md":
            assert (package / path).exists() or (ROOT / path).exists(), (
                f"architecture.md names {path}, which is neither in guest_queue/ nor the checkout"
            )
        elif path.startswith("guest_queue/"):
            assert (ROOT / path).exists(), f"{page.name} names {path}, which does not exist"
