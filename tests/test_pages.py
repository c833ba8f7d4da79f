"""The chat page mounts into any site: with or without Django's i18n URLs."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings


@override_settings(ROOT_URLCONF="tests.urls_minimal")
def test_the_chat_page_works_without_the_i18n_urls(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="gq-language"' not in html  # no language switch without set_language
    assert "/api/v1/guest/chat" in html


@pytest.mark.django_db
def test_the_chat_page_offers_the_language_switch_with_the_i18n_urls(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="gq-language"' in html and 'action="/i18n/setlang/"' in html
