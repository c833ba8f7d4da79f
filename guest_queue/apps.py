from django.apps import AppConfig


class GuestQueueConfig(AppConfig):
    name = "guest_queue"
    verbose_name = "Guest request queue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Wiring only: register checks and the settings-changed receiver.
        from . import runtime  # noqa: F401
