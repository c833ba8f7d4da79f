"""Real servers in subprocesses: uvicorn with lifespan, or daphne without."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from ..services import address_in_use
from ..services import free_port as free_port  # for the e2e modules

ROOT = Path(__file__).resolve().parents[2]
#: uvicorn's --timeout-graceful-shutdown, as docs/failure-modes.md documents it: the drain's
#: GUEST_SHUTDOWN_GRACE_SEC (30) plus the workflows' stop grace (5).
GRACEFUL_SHUTDOWN_SEC = 35
#: The test servers' SECRET_KEY (not the demo key: with DEBUG off that one stops them).
E2E_SECRET_KEY = "e2e-tests-only-" + "x" * 50

pytestmark = pytest.mark.e2e


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
        self.graceful_sec = graceful_sec
        self.db_path = tmp / "db.sqlite3"
        self.env = {**self.base_env(tmp), **env}
        self.migrate(tmp)
        # A port picked here can still be taken before the server binds it (by another test
        # run on this machine): then the server starts again on another one.
        for attempt in range(1, 6):
            self._start(kind, tmp, port or free_port())
            try:
                self._wait_ready()
                return
            except RuntimeError:
                if port or attempt == 5 or not address_in_use(self.output()):
                    raise
                self.log.close()

    def migrate(self, tmp: Path) -> None:
        """``manage.py migrate``, as a site owner runs it before starting the server.

        The test's SQLite file is a copy of one migrated once per test worker: a migration
        run is a Django start-up (about a second of CPU), and dozens of servers start.
        """
        if self.env["DATABASE_URL"] != f"sqlite:///{self.db_path}" or MIGRATED is None:
            migrate(self.env)
        elif not self.db_path.exists():
            template = MIGRATED / "db.sqlite3"
            if not template.exists():
                migrate({**self.env, "DATABASE_URL": f"sqlite:///{template}"})
            shutil.copyfile(template, self.db_path)

    def _start(self, kind: str, tmp: Path, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"{kind}-{self.port}.log"
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, *self.command(kind)],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

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
            # The test's own temp directory: the local queue's one-per-site lock file
            # (guest_queue.site_lock) is there, so servers of other tests running at the
            # same time (pytest-xdist) are not taken for a second process of this site.
            "TMPDIR": str(tmp),
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


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
    )


#: Where this test worker keeps its migrated SQLite database (see Server.migrate).
MIGRATED: Path | None = None


@pytest.fixture(scope="session", autouse=True)
def migrated_database_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    global MIGRATED
    MIGRATED = tmp_path_factory.mktemp("migrated")


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


@pytest.fixture
def probe(redis_test_url: str, redis_test_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_test_url, decode_responses=True)
    yield client
    client.close()


def client_at(address: str, **kwargs: Any) -> httpx.AsyncClient:
    """An HTTP client whose connections come from ``address`` (127.0.0.2, 127.0.0.3, …):
    a guest of its own, for the per-client cap and rate and for nginx's per-address limits."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(transport=transport, timeout=30, **kwargs)
