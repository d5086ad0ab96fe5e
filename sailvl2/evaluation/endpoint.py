"""Generation through an OpenAI-compatible server (vLLM, SGLang, ...) instead of a local model.

A :class:`~sailvl2.evaluation.prompts.PreparedInput` becomes one ``POST {base}/chat/completions`` request: a
single user message whose content interleaves text parts and ``image_url`` parts (PNG base64 data URLs) in
placeholder order, ``temperature`` 0 (greedy, PAPER.md 9.4) and ``max_tokens``. The prompt's ``<image>\\n``
placeholders are cut out together with their newline because the release chat template writes each image
item as ``<image>\\n`` (FACTS.md "Prompt format"), so the server rebuilds exactly the local prompt text.

URL rule (``api_base``): trailing slashes are ignored; a base ending in ``/chat/completions`` is used as it
is; one ending in ``/v1`` gets ``/chat/completions``; anything else gets ``/v1/chat/completions``. So
``http://host:8000``, ``http://host:8000/`` and ``http://host:8000/v1`` all mean the same endpoint.

Tile settings (``max_num``, MSAC) are not part of the OpenAI request; the server's processor decides them
(``extra_body`` is merged into each request for servers that accept such fields).

Failures: connection errors, timeouts, HTTP 408/429/5xx are retried ``retries`` times with exponential
backoff (``backoff * 2**attempt`` seconds, at most ``max_backoff``; a numeric ``Retry-After`` is honoured up
to the same cap). Other HTTP errors and malformed replies fail at once. Every failure is an
:class:`EndpointError` naming the URL, the HTTP status and the start of the response body.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from ..errors import ConfigError, EndpointError, ImagePlaceholderError
from .prompts import PreparedInput

__all__ = ["Completion", "EndpointClient", "EndpointError", "EndpointSettings", "chat_completions_url", "request_body"]

_RETRY_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
_BODY_EXCERPT = 300
_PLACEHOLDER = re.compile(r"<image>\n?")


@dataclass(frozen=True)
class EndpointSettings:
    """Where and how to call the server. ``max_tokens=None`` uses each input's ``max_new_tokens``; ``timeout``
    is the socket timeout per request in seconds; ``retries`` counts the attempts after the first;
    ``concurrency`` is the number of requests in flight in :meth:`EndpointClient.complete_many`; ``system``
    adds a system message (None: the server's template default)."""

    api_base: str
    model: str
    api_key: str | None = None
    max_tokens: int | None = None
    timeout: float = 120.0
    retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 30.0
    concurrency: int = 4
    system: str | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.api_base, str) or not re.match(r"https?://", self.api_base):
            raise ConfigError(f"api_base must be an http(s) URL, got {self.api_base!r}")
        if not self.model:
            raise ConfigError("model (the name the server serves the model under) is required")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not self.timeout > 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ConfigError("retries, backoff and max_backoff must be >= 0")
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {self.concurrency}")


@dataclass(frozen=True)
class Completion:
    """The outcome for one input of :meth:`EndpointClient.complete_many`: ``text`` on success, else ``error``."""

    index: str
    text: str | None
    error: EndpointError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def chat_completions_url(api_base: str) -> str:
    """The chat-completions URL for ``api_base`` (rule in the module docstring)."""
    base = api_base.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if base.endswith("/v1"):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


def request_body(prepared: PreparedInput, settings: EndpointSettings) -> dict[str, Any]:
    """The JSON body sent for ``prepared``."""
    pieces = _PLACEHOLDER.split(prepared.text)
    if len(pieces) - 1 != len(prepared.images):
        raise ImagePlaceholderError(
            f"item {prepared.index!r}: the text has {len(pieces) - 1} '<image>' placeholder(s) but "
            f"{len(prepared.images)} image(s) were given"
        )
    content: list[dict[str, Any]] = []
    for number, piece in enumerate(pieces):
        if number:
            url = "data:image/png;base64," + base64.b64encode(_png(prepared.images[number - 1])).decode("ascii")
            content.append({"type": "image_url", "image_url": {"url": url}})
        if piece:
            content.append({"type": "text", "text": piece})
    messages: list[dict[str, Any]] = []
    if settings.system is not None:
        messages.append({"role": "system", "content": settings.system})
    messages.append({"role": "user", "content": content})
    body: dict[str, Any] = {
        "model": settings.model,
        "messages": messages,
        "temperature": 0.0,
        "max_tokens": settings.max_tokens or prepared.max_new_tokens,
    }
    body.update(settings.extra_body)
    return body


class EndpointClient:
    """Sends prepared inputs to an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, settings: EndpointSettings) -> None:
        self.settings = settings
        self.url = chat_completions_url(settings.api_base)

    def complete(self, prepared: PreparedInput) -> str:
        """The generated text for one input; raises :class:`EndpointError` when the request fails."""
        payload = json.dumps(request_body(prepared, self.settings)).encode("utf-8")
        attempt = 0
        while True:
            attempt += 1
            try:
                return _parse_reply(self._post(payload))
            except _Retryable as exc:
                if attempt > self.settings.retries:
                    raise EndpointError(
                        f"POST {self.url} failed after {attempt} attempt(s): {exc.message}",
                        exc.status, exc.body, attempt,
                    ) from None
                delay = self.settings.backoff * 2 ** (attempt - 1)
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                time.sleep(min(delay, self.settings.max_backoff))
            except _Fatal as exc:
                raise EndpointError(f"POST {self.url} failed: {exc.message}", exc.status, exc.body, attempt) from None

    def complete_many(self, prepared: Sequence[PreparedInput]) -> list[Completion]:
        """Completions for many inputs, in input order, ``settings.concurrency`` requests at a time. A failed
        input gives a :class:`Completion` with its error instead of stopping the others."""

        def one(item: PreparedInput) -> Completion:
            try:
                return Completion(item.index, self.complete(item))
            except EndpointError as exc:
                return Completion(item.index, None, exc)

        workers = min(self.settings.concurrency, max(1, len(prepared)))
        if workers == 1:
            return [one(item) for item in prepared]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sailvl2-endpoint") as pool:
            return list(pool.map(one, prepared))

    def _post(self, payload: bytes) -> bytes:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        request = urllib.request.Request(self.url, data=payload, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            body = _excerpt(exc.read())
            message = f"HTTP {exc.code} {exc.reason}: {body}"
            if exc.code in _RETRY_STATUS:
                raise _Retryable(message, exc.code, body, _retry_after(exc.headers.get("Retry-After"))) from None
            raise _Fatal(message, exc.code, body) from None
        except (TimeoutError, socket.timeout):
            raise _Retryable(f"no reply within {self.settings.timeout} s", None, "") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise _Retryable(f"no reply within {self.settings.timeout} s", None, "") from None
            raise _Retryable(f"cannot connect: {reason}", None, "") from None
        except (OSError, http.client.HTTPException) as exc:  # reset, broken pipe, truncated reply
            raise _Retryable(f"connection failed: {exc}", None, "") from None


class _Retryable(Exception):
    def __init__(self, message: str, status: int | None, body: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.body, self.retry_after = message, status, body, retry_after


class _Fatal(Exception):
    def __init__(self, message: str, status: int | None, body: str) -> None:
        super().__init__(message)
        self.message, self.status, self.body = message, status, body


def _parse_reply(raw: bytes) -> str:
    try:
        reply = json.loads(raw)
        content = reply["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        body = _excerpt(raw)
        raise _Fatal(f"HTTP 200 but not a chat completion (no choices[0].message.content): {body}", 200, body) from None
    if content is None:
        return ""
    if isinstance(content, list):  # some servers return content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def _excerpt(raw: bytes) -> str:
    text = " ".join(raw.decode("utf-8", errors="replace").split())
    return text if len(text) <= _BODY_EXCERPT else text[:_BODY_EXCERPT] + "..."


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: fall back to the backoff schedule
        return None


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
