"""The demo project's URLs plus ``/api/v1/guest/bench/bare``: benchmarks only, never production."""

from django.urls import URLPattern, URLResolver, path

from genestory.urls import urlpatterns as site_urlpatterns

from .views import bare_stream

urlpatterns: list[URLPattern | URLResolver] = [
    # Before the site's URLs: the app's catch-all would answer 404 for it.
    path("api/v1/guest/bench/bare", bare_stream, name="bench-bare"),
    *site_urlpatterns,
]
