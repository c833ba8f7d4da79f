from django.urls import URLPattern, URLResolver, path, re_path

from . import views

app_name = "guest_queue"

urlpatterns: list[URLPattern | URLResolver] = [
    path("chat", views.chat, name="chat"),
    path("chat/simple", views.chat_simple, name="chat-simple"),
    path("queue/status", views.queue_status, name="queue-status"),
    path("queue/request/<str:request_id>", views.request_status, name="request-status"),
    path("health", views.health, name="health"),
    re_path(r"^(?P<path>.*)$", views.not_found, name="not-found"),
]
