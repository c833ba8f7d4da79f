"""Read-only review of the request history for staff."""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from .http.validation import FORBIDDEN
from .models import GuestRequest

CSV_FIELDS = [
    "request_id", "status", "error_code", "error_message", "cached", "arrival_position",
    "created_at", "started_at", "finished_at", "wait_ms", "processing_ms", "query",
    "query_length", "query_hash", "answer_preview", "client_hash", "server",
]  # fmt: skip


def _csv_cell(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    # Questions with these are refused; a workflow's answer or error text may hold them.
    value = FORBIDDEN.sub("\ufffd", value)
    # Spreadsheets run cells that start with these as formulas: neutralise guest text.
    if value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def percentile(values: list[int], p: float) -> int | None:
    """Nearest-rank percentile; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil
    return ordered[int(rank) - 1]


def summary(queryset: QuerySet[GuestRequest]) -> dict[str, Any]:
    """Counts per status and p50/p95 wait and processing times over ``queryset``."""
    counts = dict(queryset.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    waits = [w for w in queryset.values_list("wait_ms", flat=True) if w is not None]
    times = [t for t in queryset.values_list("processing_ms", flat=True) if t is not None]
    return {
        "total": sum(counts.values()),
        "counts": sorted(counts.items()),
        "wait_p50": percentile(waits, 50),
        "wait_p95": percentile(waits, 95),
        "processing_p50": percentile(times, 50),
        "processing_p95": percentile(times, 95),
    }


def top_clients(queryset: QuerySet[GuestRequest], limit: int = 10) -> list[dict[str, Any]]:
    """The client hashes with the most requests in ``queryset``, with how theirs ended."""
    rows = (
        queryset.exclude(client_hash="")
        .values("client_hash")
        .annotate(
            requests=Count("id"),
            completed=Count("id", filter=Q(status="completed")),
            cancelled=Count("id", filter=Q(status="cancelled")),
        )
        .order_by("-requests", "client_hash")[:limit]
    )
    return list(rows)


if TYPE_CHECKING:
    BaseAdmin = admin.ModelAdmin[GuestRequest]
else:
    BaseAdmin = admin.ModelAdmin


@admin.register(GuestRequest)
class GuestRequestAdmin(BaseAdmin):
    list_display = [
        "request_id", "status", "cached", "created_at", "wait_ms", "processing_ms", "question",
    ]  # fmt: skip
    list_filter = ["status", "cached", "created_at"]
    search_fields = ["request_id", "query", "client_hash"]
    date_hierarchy = "created_at"
    list_per_page = 50
    actions = ["export_csv"]
    fieldsets = [
        (None, {"fields": ["request_id", "status", "error_code", "error_message", "cached"]}),
        (
            "Timing",
            {
                "fields": [
                    "arrival_position",
                    "created_at",
                    "started_at",
                    "finished_at",
                    "wait_ms",
                    "processing_ms",
                ]
            },
        ),
        (
            "Question and answer",
            {"fields": ["query", "query_length", "query_hash", "answer_preview"]},
        ),
        ("Origin", {"fields": ["client_hash", "server"]}),
    ]

    @admin.display(description="question")
    def question(self, obj: GuestRequest) -> str:
        text = obj.query or f"({obj.query_length} characters, not stored)"
        return text if len(text) <= 80 else text[:79] + "…"

    def get_readonly_fields(
        self, request: HttpRequest, obj: GuestRequest | None = None
    ) -> list[str]:
        return [f.name for f in GuestRequest._meta.fields if f.name != "id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: GuestRequest | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: GuestRequest | None = None) -> bool:
        return False

    @admin.action(description="Export selected requests as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[GuestRequest]) -> HttpResponse:
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="guest-requests.csv"'
        writer = csv.writer(response)
        writer.writerow(CSV_FIELDS)
        for row in queryset.values_list(*CSV_FIELDS):
            writer.writerow([_csv_cell(value) for value in row])
        return response

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        if isinstance(response, TemplateResponse):
            response.context_data = response.context_data or {}
            response.context_data["history_summary"] = summary(GuestRequest.objects.all())
            changelist = response.context_data.get("cl")
            if changelist is not None:
                # Over the rows the filters select: pick the period with the date filters.
                response.context_data["top_clients"] = top_clients(changelist.queryset)
        return response
