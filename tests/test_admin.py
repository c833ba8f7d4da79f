"""The read-only history admin, as staff and as strangers see it."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from guest_queue.models import GuestRequest

pytestmark = pytest.mark.django_db

LIST = "/admin/guest_queue/guestrequest/"


def make(status: str = "completed", query: str = "What is DNA?", **fields: object) -> GuestRequest:
    now = datetime(2026, 11, 1, tzinfo=UTC)
    values: dict[str, object] = {
        "request_id": uuid.uuid4(),
        "status": status,
        "query": query,
        "query_length": len(query),
        "created_at": now,
        "started_at": now + timedelta(milliseconds=100),
        "finished_at": now + timedelta(milliseconds=1100),
        "wait_ms": 100,
        "processing_ms": 1000,
        **fields,
    }
    return GuestRequest.objects.create(**values)


def test_strangers_are_sent_to_the_login_page(client: Client) -> None:
    row = make()
    for url in (LIST, f"{LIST}{row.pk}/change/"):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_staff_see_the_list_with_a_summary(admin_client: Client) -> None:
    for i in range(19):
        make(wait_ms=i * 10, processing_ms=1000 + i)
    make(status="timeout", error_code="timeout", wait_ms=900, processing_ms=60000)
    response = admin_client.get(LIST)
    assert response.status_code == 200
    summary = response.context["history_summary"]
    assert summary["total"] == 20
    assert dict(summary["counts"]) == {"completed": 19, "timeout": 1}
    assert summary["wait_p50"] == 90 and summary["wait_p95"] == 180
    assert summary["processing_p95"] == 1018
    html = response.content.decode()
    assert 'id="guest-history-summary"' in html and "Stored requests: 20" in html
    # Read-only: no add button, no delete action.
    assert "/admin/guest_queue/guestrequest/add/" not in html
    assert "delete_selected" not in html


def test_list_filters_and_search(admin_client: Client) -> None:
    hit = make(query="How long do results take?")
    make(query="What is DNA?", status="failed", cached=True)
    by_search = admin_client.get(LIST, {"q": "results take"})
    assert list(by_search.context["cl"].result_list) == [hit]
    by_id = admin_client.get(LIST, {"q": str(hit.request_id)})
    assert list(by_id.context["cl"].result_list) == [hit]
    failed = admin_client.get(LIST, {"status__exact": "failed"})
    assert [r.status for r in failed.context["cl"].result_list] == ["failed"]
    cached = admin_client.get(LIST, {"cached__exact": "1"})
    assert [r.cached for r in cached.context["cl"].result_list] == [True]


def test_detail_page_shows_every_timing_read_only(admin_client: Client) -> None:
    row = make()
    response = admin_client.get(f"{LIST}{row.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    for label in ("Wait ms", "Processing ms", "Started at", "Finished at", "Arrival position"):
        assert label in html
    assert 'name="_save"' not in html
    assert admin_client.post(f"{LIST}{row.pk}/change/", {"status": "failed"}).status_code == 403
    assert admin_client.post(f"{LIST}{row.pk}/delete/").status_code == 403


def test_html_in_a_question_is_shown_escaped(admin_client: Client) -> None:
    row = make(query='<script>alert("x")</script><img src=x onerror=alert(1)>')
    for url in (LIST, f"{LIST}{row.pk}/change/"):
        html = admin_client.get(url).content.decode()
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert" in html


def test_csv_export_of_selected_rows(admin_client: Client) -> None:
    first, second = make(query="=HYPERLINK(1)"), make(query="plain")
    make(query="not selected")
    response = admin_client.post(
        LIST, {"action": "export_csv", "_selected_action": [first.pk, second.pk]}
    )
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert sorted(r["request_id"] for r in table) == sorted(
        [str(first.request_id), str(second.request_id)]
    )
    assert {r["query"] for r in table} == {"'=HYPERLINK(1)", "plain"}  # no formula injection
    assert table[0]["wait_ms"] == "100"


def test_csv_export_carries_no_control_or_bidi_characters(admin_client: Client) -> None:
    # Guests' questions are refused with them (test_api); a workflow's answer or error
    # text can still hold them: they must not forge lines or reorder text in the export.
    row = make(
        error_message="failed\r\n=evil,row\x1b[31m",
        answer_preview="ok \u202egnp.exe\u2069 \x85done",
    )
    response = admin_client.post(LIST, {"action": "export_csv", "_selected_action": [row.pk]})
    (record,) = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert record["error_message"] == "failed\ufffd\n=evil,row\ufffd[31m"
    assert record["answer_preview"] == "ok \ufffdgnp.exe\ufffd \ufffddone"


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_export_neutralises_every_formula_start(admin_client: Client, start: str) -> None:
    text = f"{start}cmd|' /C calc'!A0"
    row = make(query=text, error_message=f"{start}SUM(1)")
    response = admin_client.post(LIST, {"action": "export_csv", "_selected_action": [row.pk]})
    (exported,) = csv.DictReader(io.StringIO(response.content.decode(), newline=""))
    if start == "\r":
        # A control character: replaced before the formula check (no line forged either).
        assert exported["query"] == "\ufffd" + text[1:]
        assert exported["error_message"] == "\ufffdSUM(1)"
    else:
        assert exported["query"] == "'" + text
        assert exported["error_message"] == f"'{start}SUM(1)"


def test_queryset_state_filters() -> None:
    done = make()
    hit = make(cached=True)
    failed = make(status="failed")
    timed_out = make(status="timeout")
    assert set(GuestRequest.objects.completed()) == {done, hit}
    assert set(GuestRequest.objects.cached()) == {hit}
    assert set(GuestRequest.objects.unsuccessful()) == {failed, timed_out}
    assert GuestRequest.objects.newest_first().first() == timed_out


def test_every_status_of_the_queue_is_a_choice_of_the_history() -> None:
    from guest_queue.core.records import Status

    field = GuestRequest._meta.get_field("status")
    assert {value for value, _ in field.choices or []} == {s.value for s in Status}
