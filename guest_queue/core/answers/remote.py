"""What a shared queue offers to share one answer between processes (single flight).

A process answering a sharable question registers it under the question's
key; a process asked the same question finds the leader's request id there,
asks the leader's process to relay its answer (``want``), and reads the
relayed events: answer chunks, then the leader's terminal event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..events import Event


class SharedAnswers(Protocol):
    """The answers being produced right now by every process sharing the queue."""

    def leader(self, key: str) -> str | None:
        """The request id answering ``key`` in another process, if any, as last heard."""

    def register(self, key: str, leader_id: str) -> None:
        """Say this process answers ``key`` now (in the background, until ``unregister``)."""

    def unregister(self, key: str, leader_id: str) -> None:
        """The answer to ``key`` has ended here (in the background)."""

    async def want(self, leader_id: str) -> None:
        """Ask the process holding ``leader_id`` to relay its answer (errors raise)."""

    async def listen_wants(self, on_want: Callable[[str], None]) -> None:
        """Call ``on_want`` with each leader id some process asked for; runs forever."""

    def append(self, leader_id: str, seq: int, event: Event) -> None:
        """Add an event of the relayed answer (in the background, in order)."""

    async def read(self, leader_id: str, after: int, block_sec: float) -> list[tuple[int, Event]]:
        """The relayed events after ``after``, waiting up to ``block_sec`` for some."""

    async def alive(self, leader_id: str) -> bool:
        """Whether the request waits or runs in some process (errors raise)."""

    async def run(self) -> None:
        """Tell the other processes what this one answers; runs until cancelled."""
