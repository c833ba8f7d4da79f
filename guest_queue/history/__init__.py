"""The request history: written in the background (``writer``), looked up (``lookup``)."""

from .writer import HistoryWriter

__all__ = ["HistoryWriter"]
