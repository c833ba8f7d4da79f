"""The guest chat page: a reference frontend any site can mount."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.generic import TemplateView

from ..conf import app_settings


def ui_strings() -> dict[str, str]:
    """Texts the page's script shows, translated into the request's language."""
    return {
        "position": _("You are number %(position)s in line"),
        "positionEstimate": _("You are number %(position)s in line — about %(seconds)s s"),
        # An en dash between the two figures, as typeset ranges have.
        "positionRangeSec": _(
            "You are number %(position)s in line — about %(low)s–%(high)s s"  # noqa: RUF001
        ),
        "positionRangeMin": _(
            "You are number %(position)s in line — about %(low)s–%(high)s min"  # noqa: RUF001
        ),
        "next": _("You are next in line"),
        "processing": _("Writing an answer…"),
        "stopped": _("Stopped."),
        "timeout": _("This took too long, so the answer was cut short."),
        "error": _("Something went wrong: %(message)s"),
        "connection": _("The connection was lost."),
        "reconnecting": _("Reconnecting…"),
        "busy": _("Many guests are asking right now. Retrying in %(seconds)s s…"),
        "clientLimit": _(
            "You already have several questions waiting for an answer. Retrying in %(seconds)s s…"
        ),
        "rateLimited": _("You are asking very often. Please wait %(seconds)s s…"),
        "retry": _("Try again"),
        "you": _("You"),
        "assistant": _("Assistant"),
        "queueWidget": _("%(active)s answering · %(waiting)s waiting"),
        "queueUnknown": _("Queue status unavailable"),
        "suggested": _("You could also ask:"),
    }


class ChatPage(TemplateView):
    """The chat page; restyle it by overriding the template's blocks."""

    template_name = "guest_queue/chat.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["guest_queue_urls"] = {
            "chat": reverse("guest_queue:chat"),
            "status": reverse("guest_queue:queue-status"),
            # How much conversation the page may send back with a question.
            "maxHistoryTurns": app_settings.MAX_HISTORY_TURNS,
            "maxChars": app_settings.MAX_QUERY_CHARS,
        }
        context["guest_queue_strings"] = ui_strings()
        return context
