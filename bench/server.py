"""Start a real uvicorn server of the genestory project for a benchmark, and stop it."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent


def raise_fd_limit() -> int:
    """Allow as many open sockets as the hard limit permits (children inherit it)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin_server() -> None:
    # Server on the first CPU, the load generator on the others: less noise on a small machine.
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def pin_client() -> None:
    """Keep the load generator off the server's CPU."""
    cpus = os.sched_getaffinity(0)
    if len(cpus) > 1:
        os.sched_setaffinity(0, cpus - {min(cpus)})


def process_cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far (user + system, every thread), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BenchServer:
    """``uvicorn genestory.asgi:application --lifespan on`` with benchmark settings.

    ``app`` serves another ASGI app instead (e.g. ``bench.bare_site:application``,
    which needs no database and answers ``ready_path``). ``root`` is the checkout
    the server runs in (its working directory, so its packages are the ones imported).
    ``django_site``: migrate first and run the lifespan (by default for genestory's apps).
    """

    def __init__(
        self,
        settings: dict[str, str],
        workers: int = 1,
        *,
        pin: bool = True,
        app: str = "genestory.asgi:application",
        ready_path: str = "/api/v1/guest/health",
        root: Path = ROOT,
        django_site: bool | None = None,
    ) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="guest-bench-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUEST_")}
        env.update(
            DJANGO_SETTINGS_MODULE="bench.settings",
            DATABASE_URL=f"sqlite:///{self._tmp.name}/db.sqlite3",
            DEBUG="false",
            SECRET_KEY="benchmark-only-" + "x" * 50,
            LOG_LEVEL="WARNING",
            # Scenarios repeat one question: without this they would measure the cache.
            GUEST_CACHE_ENABLED="false",
            # Every load-generator client comes from 127.0.0.1: no per-client cap.
            GUEST_MAX_REQUESTS_PER_CLIENT="0",
        )
        env.update(settings)
        self.env = env
        if django_site is None:
            django_site = app.startswith(("genestory.", "bench.site_apps:"))
        if django_site:
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
                cwd=root,
                env=env,
                check=True,
            )
        cmd = [sys.executable, "-m", "uvicorn", app, "--lifespan", "on" if django_site else "off"]
        cmd += ["--port", str(self.port), "--no-access-log", "--log-level", "warning"]
        cmd += ["--backlog", "16384", "--workers", str(workers)]
        # As docs/failure-modes.md says: a client trickling a body cannot hold a restart.
        cmd += ["--timeout-graceful-shutdown", "35"]
        self.process = subprocess.Popen(
            cmd, cwd=root, env=env, preexec_fn=_pin_server if pin else None
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}{ready_path}", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        self.close()
        raise RuntimeError("benchmark server did not start")

    def rss_kib(self) -> int:
        """Resident memory of the server process, in KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (user + system, every thread)."""
        return process_cpu_seconds(self.process.pid)

    def threads(self) -> int:
        return len(list(Path(f"/proc/{self.process.pid}/task").iterdir()))

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._tmp.cleanup()

    def __enter__(self) -> BenchServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
