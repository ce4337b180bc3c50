"""mmsearch.client.search_client: the Python client of the search API (POST /v1/search, /v1/click, /v1/embed).

    from mmsearch.client.search_client import SearchClient
    c = SearchClient("http://127.0.0.1:8081")
    page = c.search("text2text", text="red running shoes", top_k=10, filter={"category": "shoes"})
    for hit in page["results"]: ...
    more = c.search("text2text", text="red running shoes", top_k=10, offset=10)   # while page["has_more"]

Errors come back as the server raised them (mmsearch.errors: BadInput, NotFound, Unavailable,
DeadlineExceeded, Overloaded, ...), mapped from the HTTP status by the same table the server uses.
A 429 comes back as Overloaded with ``retry_after_s``, the server's estimate of when to come back
(its Retry-After-Ms header, else Retry-After). The client retries a refused search or embedding only
when asked (``overload_retries``, default 0), each time after ``overload_delay``: never sooner than
Retry-After. The web page and the benches talk to the API through this client.

Its HTTP is mmsearch/client/http11.py, not urllib3 or httpx (issue 31 item 6, measured): the rule was that a
kept library replaces it if its edge (round trip less the server's timings_ms.total) is within +0.15 ms of
http11's. `python bench/client_edge.py --local` (2,000 searches answered with a fixed 20-hit body by a WSGI
app on the real waitress edge, the four clients interleaved; 2 cores, load ~6, fb78d5d) measured the edge
p50 at 0.34 ms with http11, 0.55 ms with urllib3 2.8 (a pool, urllib3.util.Retry, environment proxies:
bench/client_edge.Urllib3SearchClient), 0.42 ms with http.client and 0.31 ms with a raw socket: urllib3
+0.21 ms (paired per query +0.20; five runs +0.21 to +0.27), over the line. Bare urllib3 (one
HTTPConnectionPool, retries=False) measured +0.19 ms on its own: the cost is its request and response path
(http.client underneath, then its own wrappers), not how it was set up. httpx was not tried: it runs on
httpcore, more layers than urllib3's. The run is bench/results/client_edge.json.

What urllib3 would have brought, done here instead: the proxy the environment names (HTTP_PROXY,
HTTPS_PROXY, NO_PROXY, as urllib reads them) is used (plain http forwarded, https tunnelled with
CONNECT). A search or an embedding is sent once more on a new connection when a kept one was closed under
it (never a click); a 429 is retried only when the caller asks (above), after the server's Retry-After.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

import numpy as np

from mmsearch.client.http11 import ClosedBeforeAnswer, Connection, ProtocolError, Proxy
from mmsearch.config import HTTP_TOKEN
from mmsearch.errors import BadInput, Overloaded, Unavailable, from_http_status, retry_after_from
from mmsearch.runtime.net import http_ok

NO_RETRY_AFTER_S = 0.05  # the pause after a refusal that did not say how long to wait
MAX_OVERLOAD_DELAY_S = 2.0


def overload_delay(e: Overloaded, attempt: int = 0, rng: random.Random | None = None) -> float:
    """Seconds to wait before sending again a call refused ``attempt + 1`` times in a row: the server's
    Retry-After (or NO_RETRY_AFTER_S when it gave none), doubled with each further refusal up to 2 s,
    and up to half as much again at random so refused clients do not all come back at once. Never less
    than the Retry-After asked for."""
    base = e.retry_after_s if e.retry_after_s else NO_RETRY_AFTER_S
    grown = min(base * 2 ** min(attempt, 16), max(base, MAX_OVERLOAD_DELAY_S))
    return grown * (1 + 0.5 * (rng or random).random())



def _parse_url(base_url: str) -> tuple[str, str, int | None, str]:
    """(scheme, host as sent, port, path prefix) of the API's URL, or BadInput: whitespace or a control
    character anywhere (an environment variable's newline; urlsplit would drop it silently), a scheme other
    than http(s), a port out of range, a path that is not printable ASCII. A host outside ASCII is sent
    as IDNA."""
    bad = BadInput(f"search API url: {base_url!r} is not an http(s) URL")
    if not base_url or any(c.isspace() or not c.isprintable() for c in base_url):
        raise bad
    try:
        url = urllib.parse.urlsplit(base_url.rstrip("/"))
        port = url.port
        host = (url.hostname or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError) as e:
        raise bad from e
    if url.scheme not in ("http", "https") or not HTTP_TOKEN.fullmatch(host) or port == 0 or not HTTP_TOKEN.fullmatch(url.path or "/"):
        raise bad
    return url.scheme, host, port, url.path.rstrip("/")


def _proxy(scheme: str, host: str) -> Proxy | None:
    """The proxy the environment names for the API (http_proxy / https_proxy, none for a host NO_PROXY
    lists), read as urllib reads them; BadInput for one that is not http://[user:password@]host[:port]
    (the message names the variable, never its value: it may hold a password)."""
    url = urllib.request.getproxies().get(scheme)
    if not url or urllib.request.proxy_bypass(host):
        return None
    bad = BadInput(f"{scheme}_proxy: not an http://[user:password@]host[:port] proxy URL")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise bad
    try:
        parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)  # "host:port" alone: http, as curl reads it
        port = parts.port or 80
        proxy_host = (parts.hostname or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError) as e:
        raise bad from e
    if parts.scheme != "http" or not HTTP_TOKEN.fullmatch(proxy_host) or parts.path not in ("", "/"):
        raise bad
    auth = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username) + ":" + urllib.parse.unquote(parts.password or "")
        auth = "Basic " + base64.b64encode(user.encode()).decode("ascii")
    return Proxy(proxy_host, port, auth)


class SearchClient:
    """Thread-safe; each thread keeps one HTTP/1.1 connection to the API open between requests."""

    def __init__(self, base_url: str, timeout_s: float = 10.0, api_key: str | None = None, overload_retries: int = 0):
        """``overload_retries``: how many times a search or embedding refused with 429 is sent again
        (after ``overload_delay``, and only while that stays within ``timeout_s`` of the first try);
        0, the default, raises the first Overloaded to the caller."""
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        if overload_retries < 0:
            raise BadInput("overload_retries: 0 or more")
        self.overload_retries = overload_retries
        self.dependency = f"retrieval service at {self.base_url}"
        if api_key and not HTTP_TOKEN.fullmatch(api_key):  # (a CR or LF in it would write headers of its own)
            raise BadInput("api_key: printable ASCII without spaces")
        self._headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        self._scheme, self._host, self._port, self._prefix = _parse_url(base_url)
        self._proxy = _proxy(self._scheme, self._host)
        self._local = threading.local()

    def _connection(self) -> Connection:
        """This thread's connection. One the server has closed since its last answer (readable: EOF) is
        reopened before it is used."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = Connection(self._scheme, self._host, self._port, self.timeout_s, self._proxy)
        elif conn.used and not conn.usable():
            conn.close()
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()

    def _exchange(self, method: str, path: str, data: bytes | None, retry: bool = True) -> tuple[int, str, dict[str, str], bytes]:
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.used
            try:
                r = conn.exchange(method, self._prefix + path, self._headers, data)
            except (ClosedBeforeAnswer, ConnectionResetError, BrokenPipeError) as e:
                # a kept connection the server closed just as it was used: once more on a new one, for
                # calls that may run twice (a search, an embedding), never for a click
                if reused and retry and attempt == 1:
                    continue
                raise Unavailable(self.dependency, str(e)) from e
            except (OSError, ProtocolError) as e:
                raise Unavailable(self.dependency, str(e) or type(e).__name__) from e
            return r.status, r.reason, r.headers, r.body
        raise AssertionError("unreachable")

    def _request(self, path: str, body: dict[str, Any] | None = None, retry: bool = True, method: str | None = None) -> Any:
        """One call; a 429 is sent again up to ``overload_retries`` times (``retry`` calls only), each
        after overload_delay, while that ends within ``timeout_s`` of the first try."""
        data = json.dumps(body).encode() if body is not None else None
        give_up = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            try:
                return self._once(path, data, retry, method or ("POST" if body is not None else "GET"))
            except Overloaded as e:
                pause = overload_delay(e, attempt)
                if not retry or attempt >= self.overload_retries or time.monotonic() + pause >= give_up:
                    raise
                attempt += 1
                time.sleep(pause)

    def _once(self, path: str, data: bytes | None, retry: bool, method: str) -> Any:
        status, reason, headers, raw = self._exchange(method, path, data, retry)
        self._raise_for(status, reason, headers, raw)
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise Unavailable(self.dependency, f"an answer that is not JSON ({e})") from e

    def _raise_for(self, status: int, reason: str, headers: dict[str, str], raw: bytes) -> None:
        """An error answer as our error (its JSON message, the rejects of a refused batch, a 429's Retry-After)."""
        if status >= 400:
            try:
                err = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                err = {"message": reason}
            if not isinstance(err, dict):
                err = {"message": str(err)}
            msg = err.get("message", str(reason))
            exc = from_http_status(status, msg, err.get("dependency") or self.dependency)
            if isinstance(exc, Overloaded):
                exc.retry_after_s = retry_after_from(headers)
            if isinstance(err.get("rejects"), list):  # a refused batch of documents: each bad one, by position
                exc.rejects = err["rejects"]  # type: ignore[attr-defined]
            raise exc

    def image(self, ref: str) -> tuple[bytes, str]:
        """An image a document was sent with inline (its ``image_blob``, ``sha256:<hex>``): the bytes and their
        content type (an SVG comes rendered to PNG)."""
        status, reason, headers, raw = self._exchange("GET", "/v1/images/" + urllib.parse.quote(ref, safe=":"), None, True)
        self._raise_for(status, reason, headers, raw)
        return raw, headers.get("content-type", "application/octet-stream")

    def search(self, scene: str, text: str | None = None, image: bytes | None = None, *, user_id: str | None = None,
               top_k: int | None = None, offset: int = 0, fields: list[str] | None = None,
               filter: dict[str, Any] | None = None, force: dict[str, str] | None = None) -> dict[str, Any]:
        """One page of hits: the api_models.SearchResult body (results, has_more, experiment, timings_ms, ...)."""
        query = {"text": text} if text is not None else {"image_b64": base64.b64encode(image or b"").decode()}
        body: dict[str, Any] = {"scene": scene, "query": query}
        extra = {"user_id": user_id, "top_k": top_k, "fields": fields, "filter": filter, "force": force or None}
        body.update({k: v for k, v in extra.items() if v is not None})
        if offset:
            body["offset"] = offset
        return self._request("/v1/search", body)

    def search_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send a ready SearchBody dict as it is (replaying logged or prepared requests, as the benches do)."""
        return self._request("/v1/search", body)

    def click(self, request_id: str, doc_id: str, user_id: str | None = None) -> None:
        self._request("/v1/click", {"request_id": request_id, "doc_id": doc_id, **({"user_id": user_id} if user_id else {})},
                      retry=False)

    def embed(self, model: str, text: str | None = None, image: bytes | None = None) -> np.ndarray:
        """The model's (normalised) vector for a text or an image, preprocessed as search does."""
        body: dict[str, Any] = {"model": model}
        if text is not None:
            body["text"] = text
        else:
            body["image_b64"] = base64.b64encode(image or b"").decode()
        return np.asarray(self._request("/v1/embed", body)["embedding"], np.float32)

    # ------------------------------------------------------------------ the documents API
    def put_documents(self, index: str, documents: list[dict[str, Any]], op_id: str | None = None) -> dict[str, Any]:
        """Upsert documents by id (all-or-nothing: a bad one refuses the batch, BadInput with ``.rejects``).
        ``op_id``: an idempotency key; a retry with the same one is not applied twice (safe to retry)."""
        body: dict[str, Any] = {"documents": documents, **({"op_id": op_id} if op_id else {})}
        return dict(self._request(f"/v1/indexes/{_segment(index)}/documents", body, retry=op_id is not None, method="PUT"))

    def delete_documents(self, index: str, ids: list[str] | None = None, filter: dict[str, Any] | None = None,
                         op_id: str | None = None) -> dict[str, Any]:
        """Delete by ids or by a filter over the stored fields (the search filter language)."""
        body: dict[str, Any] = {"ids": ids} if ids is not None else {"filter": filter}
        if op_id:
            body["op_id"] = op_id
        return dict(self._request(f"/v1/indexes/{_segment(index)}/documents", body, retry=True, method="DELETE"))

    def get_document(self, index: str, doc_id: str) -> dict[str, Any]:
        """The stored document (NotFound when the live build does not hold it)."""
        return dict(self._request(f"/v1/indexes/{_segment(index)}/documents/{_segment(doc_id)}")["document"])

    def list_indexes(self) -> list[dict[str, Any]]:
        return list(self._request("/v1/indexes")["indexes"])

    def get_index(self, index: str) -> dict[str, Any]:
        return dict(self._request(f"/v1/indexes/{_segment(index)}"))

    def models(self) -> list[dict[str, Any]]:
        """The served models (name, state, provider, ...), as /v1/models lists them."""
        return list(self._request("/v1/models")["models"])

    def config(self) -> dict[str, Any]:
        """The live experiments config (/v1/config: version, source, experiments, last_error)."""
        return dict(self._request("/v1/config"))

    def openapi(self) -> dict[str, Any]:
        return self._request("/openapi.json")

    def ready(self) -> bool:
        """Whether the API can serve searches now (its /readyz: every dependency and served index)."""
        return http_ok(self.base_url + "/readyz", timeout=2)

    def healthy(self) -> bool:
        return http_ok(self.base_url + "/healthz", timeout=2)


def _segment(text: str) -> str:
    """One path segment: every reserved character (a / in a document id, too) percent-encoded."""
    return urllib.parse.quote(text, safe="")
