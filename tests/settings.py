"""Test settings: the demo project, with every GUEST_* setting at its documented default."""

from genestory.settings import *  # noqa: F403
from guest_queue.conf import DEFAULTS

# Start from the documented defaults, whatever the shell or a .env file says.
globals().update(DEFAULTS)
GUEST_WORKFLOW = "guest_queue.workflows.testing.ScriptedWorkflow"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
