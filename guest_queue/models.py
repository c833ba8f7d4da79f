"""Request history: one row per finished guest request, pruned to the newest few."""

from __future__ import annotations

from typing import Any

from django.db import models

from .core.records import Status

#: The admin's labels of the core's statuses, in the order of the field's choices.
STATUS_LABELS = {
    Status.COMPLETED: "Completed",
    Status.FAILED: "Failed",
    Status.TIMEOUT: "Timed out",
    Status.CANCELLED: "Cancelled",
    Status.QUEUED: "Queued",
    Status.PROCESSING: "Processing",
}
STATUS_CHOICES = [(status.value, label) for status, label in STATUS_LABELS.items()]


class GuestRequestQuerySet(models.QuerySet["GuestRequest"]):
    def completed(self) -> GuestRequestQuerySet:
        return self.filter(status=Status.COMPLETED)

    def unsuccessful(self) -> GuestRequestQuerySet:
        return self.filter(status__in=[Status.FAILED, Status.TIMEOUT, Status.CANCELLED])

    def cached(self) -> GuestRequestQuerySet:
        return self.filter(cached=True)

    def newest_first(self) -> GuestRequestQuerySet:
        return self.order_by("-id")

    def prune(self, keep: int) -> int:
        """Delete all but the ``keep`` newest rows, in one DELETE statement."""
        boundary = self.newest_first().values("id")[keep - 1 : keep]
        # A model without relations or delete signals takes Django's fast path: a single
        # DELETE ... WHERE id < (subquery), served by the primary-key index.
        deleted, _ = self.filter(id__lt=models.Subquery(boundary)).delete()
        return deleted


class GuestRequest(models.Model):
    """What happened to one guest request, written once when it ended."""

    request_id = models.UUIDField(unique=True)
    status = models.CharField(max_length=16, choices=STATUS_CHOICES, db_index=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    cached = models.BooleanField(default=False)
    arrival_position = models.PositiveIntegerField(
        default=0, help_text="Place in line on arrival (1 = next)."
    )
    created_at = models.DateTimeField(db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    wait_ms = models.PositiveIntegerField(null=True, blank=True)
    processing_ms = models.PositiveIntegerField(null=True, blank=True)
    query = models.TextField(blank=True, help_text="Empty when GUEST_HISTORY_STORE_QUERY is off.")
    query_length = models.PositiveIntegerField(default=0)
    query_hash = models.CharField(
        max_length=64, blank=True, help_text="Keyed hash (HMAC-SHA-256) of the question."
    )
    answer_preview = models.CharField(max_length=500, blank=True)
    client_hash = models.CharField(
        max_length=64, blank=True, help_text="Keyed hash of the client address; never the address."
    )
    server = models.CharField(max_length=128, blank=True, help_text="host:pid that served it.")

    objects = GuestRequestQuerySet.as_manager()

    class Meta:
        verbose_name = "guest request"
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.request_id} ({self.status})"

    def as_status(self) -> dict[str, Any]:
        """The ``queue/request/<id>`` shape, for requests no longer in memory."""
        return {
            "request_id": str(self.request_id),
            "status": self.status,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "wait_ms": self.wait_ms,
            "processing_ms": self.processing_ms,
            "cached": self.cached,
        }
