"""A bad setting stops a real server at start-up with the system check's message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, Server, free_port


def test_uvicorn_refuses_to_start_with_a_workflow_that_does_not_import(tmp_path: Path) -> None:
    env = {
        **Server.base_env(tmp_path),
        "GUEST_WORKFLOW": "no.such.Workflow",
    }
    cmd = ["-m", "uvicorn", "genestory.asgi:application", "--lifespan", "on"]
    cmd += ["--host", "127.0.0.1", "--port", str(free_port())]
    result = subprocess.run(
        [sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    # genestory runs every check when the app is imported; a site without that guard
    # gets the same words from the lifespan's startup.failed.
    assert "does not start" in output or "Application startup failed" in output
    # The check's own words, once, and no raw traceback.
    assert "guest_queue.E014" in output
    assert output.count("GUEST_WORKFLOW 'no.such.Workflow' cannot be imported") == 1
    assert "Traceback" not in output
