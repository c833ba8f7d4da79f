"""Real servers in subprocesses: uvicorn with lifespan, or daphne without."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
#: uvicorn's --timeout-graceful-shutdown, as docs/failure-modes.md documents it: the drain's
#: GUEST_SHUTDOWN_GRACE_SEC (30) plus the workflows' stop grace (5).
GRACEFUL_SHUTDOWN_SEC = 35
#: The test servers' SECRET_KEY (not the demo key: with DEBUG off that one stops them).
E2E_SECRET_KEY = "e2e-tests-only-" + "x" * 50

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A server process on a free port, with the environment a site owner would set."""

    def __init__(
        self,
        kind: str,
        env: dict[str, str],
        tmp: Path,
        port: int = 0,
        graceful_sec: int = GRACEFUL_SHUTDOWN_SEC,
    ) -> None:
        self.port = port or free_port()
        self.graceful_sec = graceful_sec
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"{kind}-{self.port}.log"
        self.db_path = tmp / "db.sqlite3"
        self.env = {**self.base_env(tmp), **env}
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=ROOT,
            env=self.env,
            check=True,
        )
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, *self.command(kind)],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def command(self, kind: str) -> list[str]:
        """The server's arguments after ``python``."""
        if kind == "uvicorn":
            cmd = ["-m", "uvicorn", "genestory.asgi:application", "--lifespan", "on"]
            cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
            return [*cmd, "--timeout-graceful-shutdown", str(self.graceful_sec)]
        cmd = ["-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)]
        return [*cmd, "genestory.asgi:application"]

    @staticmethod
    def base_env(tmp: Path) -> dict[str, str]:
        """The environment of a test server: the shell's, less its GUEST_* settings."""
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("GUEST_")},
            "DJANGO_SETTINGS_MODULE": "genestory.settings",
            "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
            # Long enough that only the shutdown flush can have written the rows.
            "GUEST_HISTORY_FLUSH_SEC": "30",
            # These tests repeat questions and expect each to reach the workflow.
            "GUEST_CACHE_ENABLED": "false",
            # And they ask many at once from one address (test_fair_share sets its cap).
            "GUEST_MAX_REQUESTS_PER_CLIENT": "0",
            "DEBUG": "false",
            # Not the demo key: with DEBUG off that one stops the start-up (genestory.E001).
            "SECRET_KEY": E2E_SECRET_KEY,
            "GUEST_WORKFLOW": "tests.scripted.ScriptedWorkflow",
            "PYTHONUNBUFFERED": "1",
        }

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/api/v1/guest/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


ServerFactory = Callable[..., Server]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    servers: list[Server] = []

    def start(
        kind: str = "uvicorn", *, graceful_sec: int = GRACEFUL_SHUTDOWN_SEC, **env: str
    ) -> Server:
        server = Server(kind, env, tmp_path, graceful_sec=graceful_sec)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
