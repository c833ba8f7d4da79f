"""The resumable log's bounds, exactly: what it keeps, what it drops, when it is finished."""

from __future__ import annotations

import pytest

from guest_queue.core.eventlog import EVENT_OVERHEAD_BYTES, EventLog, LogTrimmed
from guest_queue.core.events import Event

#: What a non-text event (a dict: queued, processing, …) is reckoned to cost.
DICT_EVENT = EVENT_OVERHEAD_BYTES + 160


def status(i: int) -> Event:
    return Event("queued", {"queue_position": i})


def test_a_log_exactly_at_its_byte_cap_keeps_everything() -> None:
    log = EventLog(max_events=100, max_bytes=2 * DICT_EVENT)
    log.append(status(1))
    log.append(status(2))
    assert [s for s, _ in log.read_after(0)] == [1, 2]


def test_a_log_over_its_byte_cap_keeps_just_the_newest_that_fit() -> None:
    log = EventLog(max_events=100, max_bytes=2 * DICT_EVENT + 50)
    for i in range(1, 5):
        log.append(status(i))
    assert [s for s, _ in log.read_after(2)] == [3, 4]
    with pytest.raises(LogTrimmed):
        log.read_after(1)
    assert log.size == 2 * DICT_EVENT


def test_a_long_text_chunk_counts_by_its_length() -> None:
    log = EventLog(max_events=100, max_bytes=1000)
    log.append(Event("answer_chunk", "x" * 2000))
    log.append(Event("answer_chunk", "short"))
    with pytest.raises(LogTrimmed):
        log.read_after(0)
    assert [e.data for _, e in log.read_after(1)] == ["short"]


def test_short_chunks_cost_their_length_not_a_flat_rate() -> None:
    # Ten short chunks fit in far less than ten non-text events would need.
    log = EventLog(max_events=100, max_bytes=10 * (EVENT_OVERHEAD_BYTES + 2))
    for i in range(10):
        log.append(Event("answer_chunk", f"c{i}"))
    assert len(log.read_after(0)) == 10


def test_the_terminal_event_finishes_the_log() -> None:
    log = EventLog(max_events=10, max_bytes=10_000)
    log.append(status(1))
    assert not log.finished
    log.append(Event("workflow_complete", {"suggested_questions": []}))
    assert log.finished
