from django.apps import AppConfig


class GenestoryConfig(AppConfig):
    """The demo project itself, installed for its system checks."""

    name = "genestory"
    verbose_name = "GeneStory demo site"

    def ready(self) -> None:
        from . import checks  # noqa: F401
