"""The queue shared by every process that points at the same Redis."""

from .admission import RedisAdmission

__all__ = ["RedisAdmission"]
