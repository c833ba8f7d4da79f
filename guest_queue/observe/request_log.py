"""One log line per finished request, its figures in ``extra`` for JSON formatters.

Never the question or the answer: only ids, outcome, times and the keyed
client hash the record already holds.
"""

from __future__ import annotations

import logging
from typing import Any

from ..core.records import RequestRecord

logger = logging.getLogger("guest_queue.requests")


def fields(record: RequestRecord) -> dict[str, Any]:
    """The structured fields of one finished request."""
    return {
        "request_id": record.request_id,
        "outcome": record.status.value,
        "code": record.error_code,
        "wait_ms": record.wait_ms,
        "processing_ms": record.processing_ms,
        "first_chunk_ms": record.first_chunk_ms,
        "cached": record.cached,
        "client": record.client_hint,
    }


def log_finished(record: RequestRecord) -> None:
    """The manager's listener: one INFO line on ``guest_queue.requests``."""
    if not logger.isEnabledFor(logging.INFO):
        return
    extra = fields(record)
    logger.info(
        "request %s %s%s",
        record.request_id,
        extra["outcome"],
        f" ({extra['code']})" if extra["code"] else "",
        extra=extra,
    )
