"""Static files storage: hashed, compressed names from collectstatic, served by ServeStatic."""

from __future__ import annotations

import logging

from django.core.files.storage import FileSystemStorage
from servestatic.storage import (  # type: ignore[import-untyped]
    CompressedManifestStaticFilesStorage,
)

logger = logging.getLogger("genestory")


class StaticStorage(CompressedManifestStaticFilesStorage):  # type: ignore[misc]
    """ServeStatic's manifest storage that degrades instead of failing before collectstatic.

    Django's manifest storage raises (a 500 on every page) when ``STATIC_ROOT``
    holds no manifest yet; a page with unstyled markup and a warning in the log
    tells the operator more. ``make serve`` runs collectstatic first.
    """

    _warned = False

    def url(self, name: str | None, force: bool = False) -> str:
        try:
            return str(super().url(name, force))
        except ValueError:
            if not StaticStorage._warned:
                StaticStorage._warned = True
                logger.warning(
                    "Static file %r is not in STATIC_ROOT's manifest: run collectstatic.", name
                )
            return FileSystemStorage.url(self, name)
