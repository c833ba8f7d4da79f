"""The chat page mounts into any site: with or without Django's i18n URLs."""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders
from django.template import engines
from django.test import Client, RequestFactory, override_settings
from django.utils import translation

from guest_queue.http.pages import ChatPage


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


#: GeneStory's words: none may reach a page served by the app's own template.
GENESTORY_TEXT = re.compile(r"genestory|genetic|medical|saliva|dna", re.IGNORECASE)
#: The page's texts, each in a block of its own, and the ids the script reads.
TEXT_BLOCKS = ("title", "heading", "tagline", "placeholder", "note")
SCRIPT_IDS = ("gq-form", "gq-input", "gq-send", "gq-stop", "gq-conversation", "gq-queue")


@pytest.mark.parametrize(
    ("language", "title"), [("en", "Guest assistant"), ("vi", "Trợ lý cho khách")]
)
@override_settings(ROOT_URLCONF="tests.urls_minimal")
def test_the_apps_own_page_is_neutral(client: Client, language: str, title: str) -> None:
    html = client.get("/", headers={"Accept-Language": language}).content.decode()
    assert f"<title>{title}</title>" in html and f"<h1>{title}</h1>" in html
    assert not GENESTORY_TEXT.findall(html)
    assert all(f'id="{name}"' in html for name in SCRIPT_IDS)


def test_the_page_links_an_icon_so_browsers_ask_for_no_favicon_ico(client: Client) -> None:
    html = client.get("/").content.decode()
    icon = re.search(r'<link rel="icon" href="/static/(guest_queue/[^"]+)"', html)
    assert icon is not None, "no <link rel=icon>: browsers request /favicon.ico, a 404"
    assert finders.find(icon.group(1)) is not None


def render_page(source: str, language: str = "en") -> str:
    """``source`` (a template extending the app's page) rendered as ChatPage renders it."""
    request = RequestFactory().get("/")
    page = ChatPage()
    page.setup(request)
    with translation.override(language):
        return engines["django"].from_string(source).render(page.get_context_data(), request)


def test_each_text_has_a_block_a_site_overrides_without_the_ids() -> None:
    source = '{% extends "guest_queue/chat.html" %}' + "".join(
        f"{{% block {name} %}}Site {name}{{% endblock %}}" for name in TEXT_BLOCKS
    )
    html = render_page(source)
    assert "<title>Site title</title>" in html and "<h1>Site heading</h1>" in html
    assert '<p class="gq-tagline">Site tagline</p>' in html
    assert 'placeholder="Site placeholder"' in html
    assert '<p class="gq-note">Site note</p>' in html
    assert "Guest assistant" not in html and "Answers are written automatically" not in html
    # The script's ids are still there, untouched.
    assert all(f'id="{name}"' in html for name in SCRIPT_IDS)


@pytest.mark.parametrize(
    ("language", "texts"),
    [
        (
            "en",
            [
                "GeneStory guest assistant",
                "<h1>GeneStory</h1>",
                "genetic testing",
                "not medical advice",
            ],
        ),
        ("vi", ["Trợ lý khách hàng GeneStory", "xét nghiệm gen", "không phải tư vấn y khoa"]),
    ],
)
def test_the_demo_site_page_has_genestorys_texts(
    client: Client, language: str, texts: list[str]
) -> None:
    html = client.get("/", headers={"Accept-Language": language}).content.decode()
    assert all(text in html for text in texts), html
    assert 'placeholder="' in html and all(f'id="{name}"' in html for name in SCRIPT_IDS)
