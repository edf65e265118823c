"""HTTP to an in-process Flask app: ``requests`` calls answered by the app (``WsgiTransport``), and a Flask
test client with the ``requests`` calls tests use (``HttpClient``). Used by tests/support/harness.py."""
from __future__ import annotations

import http.client
import io
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from flask import Flask
from flask.testing import FlaskClient


class HttpResponse:
    """A Flask test response read the way tests written for ``requests`` read one."""

    def __init__(self, response):
        self._response = response
        self.status_code: int = response.status_code
        self.headers = response.headers
        self.content: bytes = response.get_data()
        self.url: str = response.request.url if response.request is not None else ""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    def json(self) -> Any:
        return self._response.get_json(force=True)

    def raise_for_status(self) -> None:
        assert self.ok, f"{self.status_code}: {self.text[:300]}"


class HttpClient:
    """A Flask test client with the ``requests.Session`` calls the HTTP tests use (get, post, ... with
    ``params``, ``data``, ``json``, ``headers``, ``allow_redirects``), so a test moved in process keeps
    its assertions word for word. ``flask`` is the Flask test client underneath (cookies included)."""

    def __init__(self, flask_client: FlaskClient):
        self.flask = flask_client

    def request(self, method: str, url: str, *, params: Mapping | None = None, data: Any = None, json: Any = None,
                headers: Mapping | None = None, allow_redirects: bool = True, timeout: float | None = None,
                **kwargs: Any) -> HttpResponse:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        response = self.flask.open(path, method=method, query_string=params, data=data, json=json,
                                   headers=dict(headers or {}), follow_redirects=allow_redirects, **kwargs)
        return HttpResponse(response)

    def get(self, url: str, **kwargs: Any) -> HttpResponse:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> HttpResponse:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> HttpResponse:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> HttpResponse:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> HttpResponse:
        return self.request("DELETE", url, **kwargs)

    @property
    def cookies(self) -> dict[str, str]:
        return {cookie.key: cookie.value for cookie in self.flask._cookies.values()}


class _OriginalResponse:
    """What requests reads the Set-Cookie headers from (``raw._original_response.msg``)."""

    def __init__(self, msg: http.client.HTTPMessage):
        self.msg = msg

    def isclosed(self) -> bool:
        return True


class WsgiTransport:
    """Answers ``requests`` calls to ``base_url`` with the in-process app, all others as usual.

    With it, code that speaks HTTP with ``requests`` runs unchanged against the harness app: the test
    helpers that sign in through the development provider's forms (``sign_in``, ``sign_in_again``,
    ``break_glass``), and the portal's own OpenID client (Authlib), which fetches the provider's metadata,
    exchanges the code and reads the keys from ``/devidp`` of the same app. Each call runs in a thread
    of its own, as a request of a real server would: the portal's callback calls the provider's token
    endpoint while its own request is still open, and thread-local request state must not mix."""

    def __init__(self, app: Flask, base_url: str):
        self.app = app
        self.netloc = urlsplit(base_url).netloc
        self._original_send = requests.adapters.HTTPAdapter.send

    @contextmanager
    def installed(self) -> Iterator[None]:
        transport = self

        def send(adapter, request, *args, **kwargs):
            if urlsplit(request.url).netloc != transport.netloc:
                return transport._original_send(adapter, request, *args, **kwargs)
            return transport.answer(adapter, request)

        requests.adapters.HTTPAdapter.send = send
        try:
            yield
        finally:
            requests.adapters.HTTPAdapter.send = self._original_send

    def answer(self, adapter: requests.adapters.HTTPAdapter, request: requests.PreparedRequest) -> requests.Response:
        parts = urlsplit(request.url)
        body = request.body.encode() if isinstance(request.body, str) else (request.body or b"")
        outcome: dict[str, Any] = {}

        def serve() -> None:
            try:
                client = self.app.test_client(use_cookies=False)
                response = client.open(parts.path, method=request.method, query_string=parts.query,
                                       headers=list(request.headers.items()), data=body,
                                       environ_base={"REMOTE_ADDR": "127.0.0.1"})
                outcome["body"] = response.get_data()  # here: a streamed body runs in its request's context
                outcome["response"] = response
            except BaseException as exc:  # re-raised in the caller's thread
                outcome["error"] = exc

        worker = threading.Thread(target=serve, name="harness-request")
        worker.start()
        worker.join()
        if "error" in outcome:
            raise outcome["error"]
        response = outcome["response"]
        headers, msg = urllib3.HTTPHeaderDict(), http.client.HTTPMessage()
        for name, value in response.headers.items():
            headers.add(name, value)
            msg[name] = value
        raw = urllib3.HTTPResponse(body=io.BytesIO(outcome["body"]), headers=headers, status=response.status_code,
                                   reason=response.status.partition(" ")[2], preload_content=False,
                                   decode_content=False, original_response=_OriginalResponse(msg))
        return adapter.build_response(request, raw)
