from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path

from guest_queue.http.pages import ChatPage

urlpatterns: list[URLPattern | URLResolver] = [
    # The app's own chat page with GeneStory's texts (genestory/templates/genestory/chat.html).
    path("", ChatPage.as_view(template_name="genestory/chat.html"), name="home"),
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/v1/guest/", include("guest_queue.urls")),
]
