"""The OpenAI-compatible client against a local `http.server` stub on 127.0.0.1 (port 0): request format,
URL rule, retries on a transient 500, fatal 4xx, timeouts, connection errors, concurrency and ordering."""

from __future__ import annotations

import base64
import io
import json
import time
from http.server import ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from sailvl2.errors import ConfigError, ImagePlaceholderError
from sailvl2.evaluation.endpoint import (
    EndpointClient,
    EndpointError,
    EndpointSettings,
    chat_completions_url,
)
from sailvl2.evaluation.prompts import PreparedInput

from .http_stub import JSONStub, serve


class _Stub(JSONStub):
    """Answers `echo:<all text parts>`; behaviour keyed by words in the text: FAILONCE (one 500 first),
    ALWAYS500, BAD400, SLOW (sleeps 0.8 s), GARBAGE (200 with a non-completion body)."""

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = "".join(part["text"] for part in body["messages"][-1]["content"] if part["type"] == "text")
        with server.lock:
            server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            server.counts[text] = server.counts.get(text, 0) + 1
            count = server.counts[text]
        if "FAILONCE" in text and count == 1 or "ALWAYS500" in text:
            return self._send(500, b'{"error": "transient overload"}')
        if "BAD400" in text:
            return self._send(400, json.dumps({"error": {"message": "max_tokens is too large: " + "x" * 1000}}).encode())
        if "SLOW" in text:
            time.sleep(0.8)
        if "GARBAGE" in text:
            return self._send(200, b'{"id": "nothing here"}')
        reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "echo:" + text}}]}
        self._send(200, json.dumps(reply).encode())


@pytest.fixture()
def server():
    with serve(_Stub, requests=[], counts={}) as httpd:
        yield httpd


def _base(httpd, suffix=""):
    return f"http://127.0.0.1:{httpd.server_address[1]}{suffix}"


def _prepared(text="Q?", images=(), index="1", max_new_tokens=77):
    return PreparedInput(index=index, text=text, images=list(images), max_num=10, use_msac=False,
                         max_new_tokens=max_new_tokens)


def _settings(httpd, **kwargs):
    kwargs.setdefault("backoff", 0.0)
    return EndpointSettings(api_base=_base(httpd), model="sail-vl2", **kwargs)


def test_url_rule():
    expected = "http://h:8000/v1/chat/completions"
    for base in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/", expected):
        assert chat_completions_url(base) == expected
    assert chat_completions_url("https://x.org/api/v1") == "https://x.org/api/v1/chat/completions"


def test_request_format_and_images(server):
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (12, 9, 3), dtype=np.uint8), rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)]
    images = [Image.fromarray(array) for array in arrays]
    prepared = _prepared("Image-1: <image>\nImage-2: <image>\nWhich is brighter?", images)
    client = EndpointClient(EndpointSettings(api_base=_base(server, "/v1/"), model="sail-vl2", api_key="k-123"))
    assert client.complete(prepared) == "echo:Image-1: Image-2: Which is brighter?"

    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer k-123"
    assert request["headers"]["Content-Type"] == "application/json"
    body = request["body"]
    assert body["model"] == "sail-vl2" and body["temperature"] == 0 and body["max_tokens"] == 77
    (message,) = body["messages"]
    assert message["role"] == "user"
    content = message["content"]
    assert [part["type"] for part in content] == ["text", "image_url", "text", "image_url", "text"]
    assert [part["text"] for part in content if part["type"] == "text"] == ["Image-1: ", "Image-2: ", "Which is brighter?"]
    for part, array in zip([p for p in content if p["type"] == "image_url"], arrays):
        url = part["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert np.array_equal(np.asarray(decoded.convert("RGB")), array)


def test_base_without_v1_settings_override_and_system(server):
    client = EndpointClient(_settings(server, max_tokens=5, system="Be terse.", extra_body={"top_k": 1}))
    assert client.complete(_prepared("<image>\nWhat?", [Image.new("RGB", (4, 4))])) == "echo:What?"
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions" and "Authorization" not in request["headers"]
    body = request["body"]
    assert body["max_tokens"] == 5 and body["top_k"] == 1
    assert body["messages"][0] == {"role": "system", "content": "Be terse."}
    assert [part["type"] for part in body["messages"][1]["content"]] == ["image_url", "text"]


def test_transient_500_is_retried(server):
    client = EndpointClient(_settings(server, retries=2))
    assert client.complete(_prepared("FAILONCE")) == "echo:FAILONCE"
    assert server.counts["FAILONCE"] == 2


def test_persistent_500_gives_up_after_retries(server):
    client = EndpointClient(_settings(server, retries=2))
    with pytest.raises(EndpointError, match="HTTP 500") as info:
        client.complete(_prepared("ALWAYS500"))
    assert info.value.status == 500 and info.value.attempts == 3
    assert "transient overload" in info.value.body and "3 attempt" in str(info.value)
    assert server.counts["ALWAYS500"] == 3


def test_client_error_is_not_retried_and_names_status_and_body(server):
    client = EndpointClient(_settings(server, retries=3))
    with pytest.raises(EndpointError) as info:
        client.complete(_prepared("BAD400"))
    error = info.value
    assert error.status == 400 and error.attempts == 1 and server.counts["BAD400"] == 1
    assert "HTTP 400" in str(error) and "max_tokens is too large" in str(error)
    assert 0 < len(error.body) <= 303 and error.body.endswith("...")  # an excerpt, not the whole body


def test_malformed_reply(server):
    with pytest.raises(EndpointError, match="not a chat completion") as info:
        EndpointClient(_settings(server)).complete(_prepared("GARBAGE"))
    assert "nothing here" in info.value.body


def test_timeout(server):
    client = EndpointClient(_settings(server, timeout=0.2, retries=1))
    with pytest.raises(EndpointError, match="no reply within 0.2 s") as info:
        client.complete(_prepared("SLOW"))
    assert info.value.status is None and info.value.attempts == 2


def test_connection_refused():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    port = httpd.server_address[1]
    httpd.server_close()  # nothing listens there any more
    client = EndpointClient(EndpointSettings(api_base=f"http://127.0.0.1:{port}", model="m", retries=1, backoff=0))
    with pytest.raises(EndpointError, match="cannot connect") as info:
        client.complete(_prepared())
    assert info.value.status is None and info.value.attempts == 2


def test_complete_many_keeps_order_and_reports_failures(server):
    texts = ["SLOW a", "two", "BAD400", "SLOW b", "FAILONCE five", "SLOW c"]
    client = EndpointClient(_settings(server, concurrency=3, retries=1))
    start = time.perf_counter()
    results = client.complete_many([_prepared(text, index=str(i)) for i, text in enumerate(texts)])
    elapsed = time.perf_counter() - start
    assert [r.index for r in results] == [str(i) for i in range(6)]
    assert [r.text for r in results] == ["echo:SLOW a", "echo:two", None, "echo:SLOW b", "echo:FAILONCE five", "echo:SLOW c"]
    assert [r.ok for r in results] == [True, True, False, True, True, True]
    assert results[2].error.status == 400 and server.counts["FAILONCE five"] == 2
    # One after the other the three 0.8 s requests take >= 2.4 s; with 3 in flight they overlap.
    assert elapsed < 2.2


def test_placeholder_mismatch_and_bad_settings(server):
    client = EndpointClient(_settings(server))
    with pytest.raises(ImagePlaceholderError, match="1 '<image>' placeholder"):
        client.complete(_prepared("<image>\nQ", []))
    with pytest.raises(ConfigError):
        EndpointSettings(api_base="127.0.0.1:8000", model="m")
    with pytest.raises(ConfigError):
        EndpointSettings(api_base="http://h", model="m", concurrency=0)
    assert server.requests == []
