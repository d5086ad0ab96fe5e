"""The LLM judge: reads a final answer out of a response when the extraction rules of ``extract.py`` cannot.

PAPER.md 9.1: VLMEvalKit-style rule matching first, an LLM judge only for what the rules miss (the paper used
Doubao-1.5-vision-pro for base models, GPT-4o-mini for thinking models). Any OpenAI-compatible chat endpoint
can be the judge; :class:`OpenAIJudge` implements the :class:`~sailvl2.evaluation.extract.Judge` protocol.

The URL rule and the HTTP layer (error classification, excerpts of error bodies, ``Retry-After``) are those of
``endpoint.py``. The judge's retry policy is its own: besides connection errors, timeouts, HTTP 408/429/5xx it
also retries a malformed reply (a judge that answers garbage once usually answers properly the next time).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError, JudgeError
from .endpoint import EndpointClient, EndpointSettings, _Fatal, _Retryable, chat_completions_url
from .extract import _check_options, extract_choice

__all__ = ["JudgeError", "OpenAIJudge"]

_SYSTEM = "You read the final answer out of another model's response. Do not solve the question yourself."
_ASK_LETTER = "Reply with only the letter of the option the response chose, or NONE if it chose none or several."
_ASK_TEXT = "Reply with only the final answer the response states (a word, phrase or number), or NONE."


class OpenAIJudge:
    """A judge backed by an OpenAI-compatible ``/v1/chat/completions`` endpoint (greedy decoding).

    Network errors, malformed replies, HTTP 408, 429 and 5xx are retried ``max_retries`` times with exponential
    backoff (``retry_delay * 2**attempt`` s, longer when the server sends ``Retry-After``); other HTTP errors
    fail at once. Replies are cached in a JSONL file keyed by a hash of the full request, so a re-run never
    pays twice for a question; each entry is one ``O_APPEND`` write, so concurrent writers do not interleave.
    """

    def __init__(self, api_base: str, model: str, api_key: str | None = None, max_retries: int = 3,
                 cache_path: str | Path | None = None, timeout: float = 60.0, retry_delay: float = 1.0) -> None:
        if not isinstance(api_base, str) or not api_base.startswith(("http://", "https://")):
            raise InputError(f"api_base must be an http(s) URL, got {api_base!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise InputError(f"max_retries must be an int >= 0, got {max_retries!r}")
        self.url = chat_completions_url(api_base)
        self.model, self.api_key, self.max_retries = model, api_key, max_retries
        self.timeout, self.retry_delay = timeout, retry_delay
        self.cache_path = Path(cache_path) if cache_path is not None else None
        # The retries are counted here (the malformed-reply rule differs), so the client makes one attempt.
        self._client = EndpointClient(EndpointSettings(api_base, model or "judge", api_key, timeout=timeout, retries=0))
        self._cache: dict[str, str] | None = None
        self._unterminated = False  # the cache file ends in a partial line (a crash mid-write)
        self._lock = threading.Lock()

    def __call__(self, question: str, response: str, options: Mapping[str, str] | None = None) -> str | None:
        letters = _check_options(options) if options is not None else None
        lines = [f"Question: {question}", *(f"{k}. {v}" for k, v in (letters or {}).items()),
                 f"Response: {response}", _ASK_LETTER if letters else _ASK_TEXT]
        request = {"model": self.model, "temperature": 0, "max_tokens": 64, "messages": [
            {"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n".join(lines)}]}
        key = hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        with self._lock:
            content = self._load_cache().get(key)
        if content is None:
            content = self._post(request)
            self._store(key, content)
        reply = content.strip()
        if not reply or reply.strip(" .").upper() == "NONE":
            return None
        return extract_choice(reply, letters) if letters is not None else reply

    def _load_cache(self) -> dict[str, str]:
        if self._cache is None:
            self._cache = {}
            if self.cache_path is not None and self.cache_path.exists():
                text = self.cache_path.read_text(encoding="utf-8")
                self._unterminated = bool(text) and not text.endswith("\n")
                for line in text.splitlines():
                    try:
                        entry = json.loads(line)
                        self._cache[entry["key"]] = entry["content"]
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by a crash: that request is simply asked again
        return self._cache

    def _store(self, key: str, content: str) -> None:
        with self._lock:
            self._load_cache()[key] = content
            if self.cache_path is None:
                return
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            line = ("\n" if self._unterminated else "") + json.dumps({"key": key, "content": content}) + "\n"
            self._unterminated = False
            fd = os.open(self.cache_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)

    def _post(self, request: dict[str, Any]) -> str:
        payload, last_error = json.dumps(request).encode("utf-8"), ""
        for attempt in range(self.max_retries + 1):
            try:
                raw = self._client._post(payload)
            except _Fatal as exc:
                raise JudgeError(f"judge endpoint {self.url} refused the request: {exc.message}") from None
            except _Retryable as exc:
                last_error, wait = exc.message, exc.retry_after
            else:
                content = _reply_content(raw)
                if content is not None:
                    return content
                last_error, wait = f"not a chat completion: {raw[:200]!r}", None
            if attempt < self.max_retries:
                time.sleep(max(self.retry_delay * 2**attempt, wait or 0.0))
        raise JudgeError(f"judge endpoint {self.url} failed {self.max_retries + 1} times; last error: {last_error}")


def _reply_content(raw: bytes) -> str | None:
    """``choices[0].message.content`` of a reply when it is a string, else None (a malformed reply)."""
    try:
        content = json.loads(raw.decode("utf-8"))["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None
