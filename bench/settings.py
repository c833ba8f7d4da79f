"""The demo project's settings plus the benchmark-only baseline view (``bench.urls``)."""

from genestory.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
