"""A fresh ``startproject`` site's URLs plus the app, as the README mounts it: no i18n URLs."""

from django.urls import include, path

from guest_queue.http.pages import ChatPage

urlpatterns = [
    path("", ChatPage.as_view()),
    path("api/v1/guest/", include("guest_queue.urls")),
]
