"""One local queue per site and host: a second process of the same site is reported.

With the local backend every worker process (``uvicorn --workers N``, gunicorn)
runs a queue of its own, so the limits silently multiply by N. The first process
of a site takes an advisory lock (``flock``) on a file in the temp directory
named from a keyed hash of the settings module and ``BASE_DIR``; a second one
finds it taken and warns. The lock lives as long as the process: the system
releases it at exit, however the process ends.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path
from typing import IO

from django.conf import settings
from django.utils.crypto import salted_hmac

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: nothing to check there
    fcntl = None  # type: ignore[assignment]

#: This process's hold on its site's lock, once it has it (kept open until exit).
_held: IO[str] | None = None


def lock_path() -> Path:
    """The site's lock file: the same for every process of one site on one host."""
    base = str(getattr(settings, "BASE_DIR", "") or os.getcwd())
    module = str(getattr(settings, "SETTINGS_MODULE", "") or "")
    digest = salted_hmac("guest_queue.runtime.site_lock", f"{module}\0{base}", algorithm="sha256")
    key = digest.hexdigest()[:32]
    return Path(tempfile.gettempdir()) / f"guest-queue-{key}.lock"


def claim_local_queue() -> str | None:
    """Take the site's lock for this process; the warning to give if another holds it."""
    global _held
    if _held is not None or fcntl is None:
        return None
    path = lock_path()
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        return (
            f"Another process of this site (pid {holder}) runs its own local queue on this "
            "host, so the queue's limits (concurrent requests, queue size) are multiplied by "
            "the number of processes. Run one worker per queue (uvicorn without --workers), "
            'or set GUEST_QUEUE_BACKEND = {"BACKEND": "redis", "OPTIONS": {"url": ...}} so '
            "every process shares one queue."
        )
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _held = handle
    # Closed (and so released) at exit: no unclosed-file warning from the interpreter.
    atexit.register(handle.close)
    return None
