from django.urls import URLPattern, URLResolver, path, re_path

from .http import resume_views, views

app_name = "guest_queue"

urlpatterns: list[URLPattern | URLResolver] = [
    path("chat", views.chat, name="chat"),
    path("chat/simple", views.chat_simple, name="chat-simple"),
    path("chat/<str:request_id>/events", resume_views.chat_events, name="chat-events"),
    path("chat/<str:request_id>/cancel", resume_views.chat_cancel, name="chat-cancel"),
    path("queue/status", views.queue_status, name="queue-status"),
    path("queue/request/<str:request_id>", views.request_status, name="request-status"),
    path("health", views.health, name="health"),
    path("health/live", views.health_live, name="health-live"),
    path("openapi.json", views.openapi, name="openapi"),
    path("metrics", views.metrics_endpoint, name="metrics"),
    # [\s\S], not ".": a path may hold an encoded newline, which "." does not match.
    re_path(r"^(?P<path>[\s\S]*)\Z", views.not_found, name="not-found"),
]
