"""The queue core and the workflow interface are plain asyncio: importing them loads no Django."""

import subprocess
import sys

MODULES = [
    "guest_queue.core",
    "guest_queue.core.answers.cache",
    "guest_queue.core.answers.sharing",
    "guest_queue.core.backends.base",
    "guest_queue.core.backends.local",
    "guest_queue.core.backends.redis.admission",
    "guest_queue.core.backends.redis.link",
    "guest_queue.core.backends.redis.scripts",
    "guest_queue.core.availability",
    "guest_queue.core.config",
    "guest_queue.core.consume",
    "guest_queue.core.endings",
    "guest_queue.core.errors",
    "guest_queue.core.events",
    "guest_queue.core.live",
    "guest_queue.core.manager",
    "guest_queue.core.records",
    "guest_queue.core.reporting",
    "guest_queue.core.runner",
    "guest_queue.core.stats",
    "guest_queue.core.stopping",
    "guest_queue.core.stream",
    "guest_queue.core.translate",
    "guest_queue.workflows.base",
    "guest_queue.workflows.matching",
    "guest_queue.workflows.openai",
]


def test_core_imports_without_django() -> None:
    code = "import sys\n" + "".join(f"import {m}\n" for m in MODULES)
    code += "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'django')\n"
    code += "assert not loaded, loaded\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
