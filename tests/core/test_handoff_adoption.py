"""A handed-off request arrives on the adopting process whole: its question's context and
the wait the guest has already done."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from guest_queue.core.backends.base import Ticket
from guest_queue.core.backends.redis.handoff import adopted_ticket, handoff_json
from guest_queue.core.handoff import HAND_OFF_RETRY_MS
from guest_queue.core.records import RequestRecord
from guest_queue.workflows.base import WorkflowRequest

from .conftest import Factory, GateWorkflow, admission, until
from .test_resume import Reader

RID = "00000000-0000-4000-8000-0000000000a1"


def handed(created_at: float) -> Ticket:
    record = RequestRecord(
        request_id=RID,
        query="And the BRCA2 gene?",
        client_hint="hint-7",
        client_groups=(("net-56", 4), ("net-48", 16)),
    )
    record.created_at = created_at
    history = (("What is BRCA1?", "A tumour suppressor gene."), ("Where?", "Chr 17."))
    return Ticket(record, WorkflowRequest(RID, record.query, language="fr", history=history))


def test_an_adopted_request_keeps_its_client_language_and_conversation() -> None:
    sent = handed(time.time() - 30)
    got = adopted_ticket(RID, handoff_json(sent))
    assert got.request_id == RID and got.record.query == "And the BRCA2 gene?"
    assert got.record.client_hint == "hint-7"
    assert got.request.language == "fr"
    assert got.request.history == sent.request.history
    assert got.record.client_groups == (("net-56", 4), ("net-48", 16))


def test_an_adopted_request_keeps_the_wait_already_done() -> None:
    created = time.time() - 30
    got = adopted_ticket(RID, handoff_json(handed(created)))
    assert got.record.created_at == created
    assert 29 < time.monotonic() - got.record.created_mono < 31


def test_a_hand_off_from_a_clock_ahead_counts_no_negative_nor_invented_wait() -> None:
    got = adopted_ticket(RID, handoff_json(handed(time.time() + 5)))
    assert 0 <= time.monotonic() - got.record.created_mono < 0.5


def test_a_hand_off_without_context_adopts_a_plain_request() -> None:
    got = adopted_ticket(RID, '{"query": "q"}')
    assert got.record.client_hint is None
    assert got.request.language is None and got.request.history == ()
    assert got.record.client_groups == ()


async def test_an_adopted_guest_hears_everything_after_the_hand_off(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, max_concurrent=1, shutdown_grace_sec=5, resume_grace_sec=10)
    b = shared(gate, max_concurrent=1, resume_grace_sec=10)
    draining_too = shared(gate, max_concurrent=1, resume_grace_sec=10)
    running = await a.submit("running")
    Reader(a, a.resumable(running))
    await until(lambda: gate.started == ["running"])
    waiting = await a.submit("waiting")
    old = Reader(a, a.resumable(waiting))
    await until(lambda: old.names == ["queued"])
    a.begin_drain()
    assert (await old.done())[-1] == "reconnect"
    assert old.events[-1]["data"] == {"retry_ms": HAND_OFF_RETRY_MS}  # when to come back
    draining_too.begin_drain()
    await until(lambda: not draining_too.accepting)
    assert await draining_too.handoff.adopt(waiting.request_id) is None  # it takes nobody on
    res = await b.handoff.adopt(waiting.request_id)
    assert res is not None and res.ticket.record.arrival_position == 1
    resumed = Reader(b, res, after=old.seqs[-1])
    await until(lambda: "queued" in resumed.names)
    gate.open(running.request_id)
    gate.open(waiting.request_id)
    assert (await resumed.done())[-1] == "workflow_complete"
    assert resumed.names[0] == "queued" and "processing" in resumed.names
    assert resumed.seqs[0] == old.seqs[-1] + 1


async def test_a_hand_off_whose_data_is_gone_is_reported_and_the_next_one_still_recorded(
    shared: Factory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    b = shared(GateWorkflow())
    ended: list[Any] = []
    b.add_listener(ended.append)
    backend = admission(b)
    # Two hand-offs long overdue, nobody adopted them: the first one's data has expired.
    await backend.client.set(backend.handoff_prefix + RID, handoff_json(handed(time.time())))
    await backend.client.zadd(backend.handoffs_key, {"gone-request": 1, RID: 2})
    with caplog.at_level(logging.WARNING, logger="guest_queue"):
        await until(lambda: ended, timeout=3)
    assert [(r.request_id, r.status.value, r.query) for r in ended] == [
        (RID, "cancelled", "And the BRCA2 gene?")
    ]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "Hand-off of request gone-request expired without its data"
    ]
