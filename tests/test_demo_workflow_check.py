"""The demo workflow's ``knowledge`` option is checked at start-up like any other setting."""

from __future__ import annotations

from django.core.checks import run_checks
from django.test import override_settings

DEMO = "guest_queue.workflows.demo.DemoWorkflow"


def ids(**settings: object) -> set[str]:
    with override_settings(**settings):
        return {m.id for m in run_checks() if m.id and m.id.startswith("guest_queue.")}


def test_an_unreadable_knowledge_is_a_check_error() -> None:
    assert ids(GUEST_WORKFLOW=DEMO) == set()
    assert (
        ids(
            GUEST_WORKFLOW=DEMO,
            GUEST_WORKFLOW_OPTIONS={"knowledge": "genestory.assistant.knowledge"},
        )
        == set()
    )
    assert ids(GUEST_WORKFLOW=DEMO, GUEST_WORKFLOW_OPTIONS={"knowledge": "mysite.nowhere"}) == {
        "guest_queue.E041"
    }
