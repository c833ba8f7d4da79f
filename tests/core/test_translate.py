"""What each item a workflow yields becomes on the guest's stream (the workflow contract)."""

from __future__ import annotations

import logging

import pytest

from guest_queue.core import events as ev
from guest_queue.core.endings import Ending
from guest_queue.core.records import Status
from guest_queue.core.runner import Wake
from guest_queue.core.translate import translate


def test_text_is_a_chunk_and_empty_text_is_nothing() -> None:
    assert translate("Hello ") == ev.Event(ev.ANSWER_CHUNK, "Hello ")
    assert translate("") is None
    assert translate({"event": "answer_chunk", "data": "Hi"}) == ev.Event(ev.ANSWER_CHUNK, "Hi")
    assert translate({"event": "answer_chunk", "data": ""}) is None


def test_endings_pass_through_and_a_wake_is_nothing() -> None:
    ending = Ending.failed("x", "y")
    assert translate(ending) is ending
    assert translate(Wake()) is None


@pytest.mark.parametrize("item", [5, None, ["chunk"], {"data": "no event"}, {"event": 7}])
def test_an_item_outside_the_contract_ends_the_request_with_a_generic_error(
    item: object, caplog: pytest.LogCaptureFixture
) -> None:
    step = translate(item)
    assert step == Ending.failed(ev.CODE_INTERNAL, "Sorry, something went wrong.")
    assert isinstance(step, Ending) and step.status is Status.FAILED
    assert [r.getMessage() for r in caplog.records] == [
        f"Workflow yielded an item of type {type(item).__name__}; ending the request"
    ]
    assert caplog.records[0].levelno == logging.ERROR


def test_workflow_complete_ends_with_its_payload() -> None:
    done = translate({"event": "workflow_complete", "data": {"suggested_questions": ["Why?"]}})
    assert isinstance(done, Ending) and done.status is Status.COMPLETED
    assert done.event == ev.Event(ev.WORKFLOW_COMPLETE, {"suggested_questions": ["Why?"]})
    bare = translate({"event": "workflow_complete", "data": "not a dict"})
    assert isinstance(bare, Ending)
    assert bare.event == ev.Event(ev.WORKFLOW_COMPLETE, {"suggested_questions": []})


def test_a_workflow_error_ends_with_its_message_or_a_default() -> None:
    failed = translate({"event": "error", "data": {"error": "The model is busy."}})
    assert failed == Ending.failed(ev.CODE_WORKFLOW_ERROR, "The model is busy.")
    for data in ({}, None, "text", {"error": ""}):
        assert translate({"event": "error", "data": data}) == Ending.failed(
            ev.CODE_WORKFLOW_ERROR, "The request failed."
        )


@pytest.mark.parametrize("name", ["queued", "processing", "timeout"])
def test_the_queues_own_events_are_dropped_with_a_warning(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert translate({"event": name, "data": {"queue_position": 1}}) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"Workflow emitted the reserved event {name!r}; dropped"
    ]


def test_any_other_event_goes_to_the_guest_as_it_is() -> None:
    assert translate({"event": "sources", "data": [{"title": "DNA"}]}) == ev.Event(
        "sources", [{"title": "DNA"}]
    )
    assert translate({"event": "thinking"}) == ev.Event("thinking", None)
