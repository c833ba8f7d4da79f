"""A probe that fails means "down", said once with its traceback; bad backend names, word
for word (the settings check shows these messages to the site owner)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from guest_queue.core.availability import AvailabilityProbe
from guest_queue.core.backends import backend_class
from guest_queue.core.backends.local import LocalAdmission
from guest_queue.workflows.base import WorkflowItem, WorkflowRequest


class BrokenProbe:
    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        yield ""

    async def is_available(self) -> bool:
        raise ConnectionError("health endpoint unreachable")


async def test_a_probe_that_fails_says_down_and_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    probe = AvailabilityProbe(BrokenProbe(), ttl=60)
    assert await probe.check() is False
    assert await probe.check() is False  # cached: probed once
    records = [r for r in caplog.records if r.name == "guest_queue"]
    assert [r.getMessage() for r in records] == ["Workflow availability probe failed"]
    assert records[0].levelno == logging.WARNING and records[0].exc_info  # with the traceback


def test_backend_names_that_do_not_name_a_backend_say_why() -> None:
    assert backend_class("guest_queue.core.backends.local.LocalAdmission") is LocalAdmission
    with pytest.raises(ImportError, match=r"^not a dotted path$"):
        backend_class("nodots")
    with pytest.raises(ImportError) as missing:
        backend_class("guest_queue.core.backends.local.Nope")
    assert str(missing.value) == "'guest_queue.core.backends.local' has no 'Nope'"
    with pytest.raises(TypeError) as wrong:
        backend_class("guest_queue.core.events.Event")
    assert str(wrong.value) == "'guest_queue.core.events.Event' is not an Admission subclass"
