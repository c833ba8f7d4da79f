"""A workflow that streams from any OpenAI-compatible ``/v1/chat/completions`` endpoint.

Works with vLLM, Ollama, llama.cpp's server, LiteLLM and OpenAI. Failures map
onto the queue's contract: an unreachable service is ``WorkflowUnavailable``
(503 before a stream, ``error``/``unavailable`` after); an upstream 429 or 503
is ``WorkflowBusy`` with its ``Retry-After`` (the guest waits in line again);
another 5xx is a ``WorkflowError`` carrying the upstream's message, trimmed and
scrubbed of secrets; a malformed stream is a ``WorkflowError`` too. Cancelling the request
leaves the ``async with`` blocks, which closes the upstream connection at once,
so the model server stops generating.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..core.config import ConfigProblem, int_at_least, number
from .base import (
    WorkflowBusy,
    WorkflowError,
    WorkflowItem,
    WorkflowRequest,
    WorkflowUnavailable,
)

logger = logging.getLogger("guest_queue")

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant for this website's visitors. Be accurate and brief; say so "
    "when you do not know, and do not make things up. Answer in the language of the question."
)
SUGGEST_PROMPT = (
    "Suggest three short follow-up questions a guest might ask next, in the language of the "
    "conversation, one per line, without numbering."
)
MAX_ERROR_CHARS = 200
SECRET = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+\S+|api[_-]?key\S*)", re.IGNORECASE)


@dataclass(frozen=True)
class OpenAISettings:
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key: str = field(default="", repr=False)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_tokens: int = 512
    temperature: float = 0.3
    connect_timeout_sec: float = 5.0
    read_timeout_sec: float = 30.0
    suggestions: str = "none"  # "none", "completion" or "fixed"
    fixed_suggestions: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, **options: Any) -> OpenAISettings:
        """Settings from ``GUEST_WORKFLOW_OPTIONS`` (an empty system prompt: the default)."""
        values = {**options}
        values["system_prompt"] = values.get("system_prompt") or DEFAULT_SYSTEM_PROMPT
        for name in ("temperature", "connect_timeout_sec", "read_timeout_sec"):
            if name in values:
                values[name] = float(values[name])
        values["fixed_suggestions"] = tuple(values.get("fixed_suggestions", ()))
        return cls(**values)


# (check id, option, test, what a valid value is): the ids the app has always used.
RULES: list[tuple[str, str, Callable[[Any], bool], str]] = [
    (
        "E023",
        "suggestions",
        lambda v: v in ("none", "completion", "fixed"),
        "'none', 'completion' or 'fixed'",
    ),
    ("E024", "max_tokens", int_at_least(1), "an integer >= 1"),
    ("E025", "temperature", number(0, 2), "a number from 0 to 2"),
    ("E026", "connect_timeout_sec", number(0, strict=True), "a number of seconds > 0"),
    ("E027", "read_timeout_sec", number(0, strict=True), "a number of seconds > 0"),
]


def retry_after_sec(value: str | None) -> float | None:
    """An HTTP ``Retry-After`` (seconds, or an HTTP date) as seconds from now; None when
    absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN, infinities
        return None
    return max(0.0, seconds)


def busy_for_sec(headers: Mapping[str, str]) -> float | None:
    """How long a busy upstream asks to be left alone: OpenAI's ``retry-after-ms`` (finer),
    else ``Retry-After``; None when it says neither."""
    millis = retry_after_sec(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    return retry_after_sec(headers.get("Retry-After"))


class OpenAIChatWorkflow:
    """Streams answers from an OpenAI-compatible chat completions API.

    Its options (``GUEST_WORKFLOW_OPTIONS``) are ``OpenAISettings``' fields:
    ``base_url``, ``model``, ``api_key``, ``system_prompt``, ``max_tokens``,
    ``temperature``, ``connect_timeout_sec``, ``read_timeout_sec``,
    ``suggestions`` and ``fixed_suggestions``.
    """

    def __init__(self, settings: OpenAISettings | None = None, **options: Any) -> None:
        self.settings = settings or OpenAISettings.from_options(**options)

    @classmethod
    def check(cls, options: Mapping[str, Any]) -> list[ConfigProblem]:
        """What is wrong with ``options``; the app reports each as a system check error."""
        problems = []
        for code, name, valid, expected in RULES:
            if name in options and not valid(options[name]):
                problems.append(
                    ConfigProblem(
                        code,
                        f"The OpenAI workflow's {name} must be {expected}, not {options[name]!r}.",
                        "Fix it in GUEST_WORKFLOW_OPTIONS (or its GUEST_OPENAI_* variable).",
                    )
                )
        return problems

    def _client(self) -> httpx.AsyncClient:
        s = self.settings
        headers = {"Authorization": f"Bearer {s.api_key}"} if s.api_key else {}
        timeout = httpx.Timeout(s.read_timeout_sec, connect=s.connect_timeout_sec)
        return httpx.AsyncClient(
            base_url=s.base_url.rstrip("/") + "/", headers=headers, timeout=timeout
        )

    def clean(self, text: str) -> str:
        """An upstream message fit for a guest: no secrets, one line, short."""
        if self.settings.api_key:
            text = text.replace(self.settings.api_key, "***")
        text = SECRET.sub("***", " ".join(text.split()))
        return text[:MAX_ERROR_CHARS]

    def _messages(
        self, query: str, history: tuple[tuple[str, str], ...] = ()
    ) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.settings.system_prompt},
            *({"role": role, "content": content} for role, content in history),
            {"role": "user", "content": query},
        ]

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        """Stream the model's answer, then the suggested questions."""
        s = self.settings
        payload = {
            "model": s.model,
            "messages": self._messages(request.query, request.history),
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "stream": True,
        }
        answer: list[str] = []
        try:
            async with self._client() as client:
                async with client.stream("POST", "chat/completions", json=payload) as response:
                    await self._check_status(response)
                    async for text in self._deltas(response):
                        answer.append(text)
                        yield text
                suggestions = await self._suggestions(client, request.query, "".join(answer))
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise WorkflowUnavailable("The assistant service cannot be reached.") from exc
        except httpx.TimeoutException as exc:
            raise WorkflowError("The assistant service took too long to respond.") from exc
        except httpx.TransportError as exc:
            raise WorkflowError("The connection to the assistant service was interrupted.") from exc
        yield {"event": "workflow_complete", "data": {"suggested_questions": suggestions}}

    async def _check_status(self, response: httpx.Response) -> None:
        if response.status_code == 200:
            return
        body = (await response.aread()).decode(errors="replace")
        try:
            detail = json.loads(body).get("error", body)
            message = detail.get("message", "") if isinstance(detail, dict) else str(detail)
        except (ValueError, AttributeError):
            message = body
        status = response.status_code
        logger.warning("Upstream chat completion failed: HTTP %s %s", status, self.clean(message))
        if status in (401, 403):
            raise WorkflowError("The assistant service refused our credentials.")
        if status in (429, 503):
            # Before the first chunk the queue puts the guest back at the front of the line.
            raise WorkflowBusy(
                busy_for_sec(response.headers),
                f"The assistant service is busy ({status}): {self.clean(message)}",
            )
        raise WorkflowError(f"The assistant service failed ({status}): {self.clean(message)}")

    async def _deltas(self, response: httpx.Response) -> AsyncIterator[str]:
        """The text deltas of an SSE chat completion stream."""
        finished = False
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                chunk = json.loads(data)
                if "error" in chunk:
                    raise WorkflowError(
                        f"The assistant service failed: {self.clean(str(chunk['error']))}"
                    )
                choice = chunk["choices"][0] if chunk["choices"] else {}
                text = (choice.get("delta") or {}).get("content")
                finished = finished or bool(choice.get("finish_reason"))
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
                raise WorkflowError("The assistant service sent a malformed response.") from exc
            if text:
                yield text
        if not finished:
            raise WorkflowError("The assistant service ended the answer unexpectedly.")

    async def _suggestions(self, client: httpx.AsyncClient, query: str, answer: str) -> list[str]:
        mode = self.settings.suggestions
        if mode == "fixed":
            return list(self.settings.fixed_suggestions)[:3]
        if mode != "completion" or not answer:
            return []
        messages = [
            *self._messages(query),
            {"role": "assistant", "content": answer},
            {"role": "user", "content": SUGGEST_PROMPT},
        ]
        payload = {"model": self.settings.model, "messages": messages, "max_tokens": 120}
        try:
            response = await client.post("chat/completions", json=payload)
            response.raise_for_status()
            content = response.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
            logger.warning("Suggested questions could not be generated", exc_info=True)
            return []
        lines = [
            re.sub(r"^\s*([-*•]|\d+[.)])\s*", "", line).strip() for line in content.splitlines()
        ]
        return [line for line in lines if line][:3]

    async def is_available(self) -> bool:
        """Whether ``GET /models`` answers; the queue caches this for a few seconds."""
        try:
            async with self._client() as client:
                response = await client.get("models")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def __repr__(self) -> str:
        return f"OpenAIChatWorkflow({self.settings.base_url!r}, model={self.settings.model!r})"
