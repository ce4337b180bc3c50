"""SearchClient keeps one connection per thread, replaces one the server closed, and never sends a click twice."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mmsearch.client.search_client import SearchClient
from mmsearch.errors import BadInput, Unavailable


class Api:
    """A tiny HTTP/1.1 API: counts connections and requests; can drop a connection instead of answering."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[str] = []
        self.drop_next = False  # read the next request, then close without an answer
        self.close_after = False  # answer, then close silently (an idle timeout, as servers do)
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                api.connections += 1

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                api.requests.append(self.path)
                close_after = api.close_after  # read before answering: the test changes it once it has the answer
                if api.drop_next:
                    api.drop_next = False
                    self.close_connection = True
                    return
                out = json.dumps({"ok": True, "echo": json.loads(body)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
                if close_after:
                    self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api():
    a = Api()
    yield a
    a.close()


def test_searches_share_one_connection(api):
    c = SearchClient(api.url)
    for i in range(5):
        assert c.search_body({"scene": "s", "query": {"text": str(i)}})["echo"]["query"]["text"] == str(i)
    assert api.connections == 1 and len(api.requests) == 5
    c.close()


@pytest.mark.parametrize("then", ["search", "click"])
def test_a_connection_the_server_closed_is_replaced_before_use(api, then):
    """A search would be resent if the closed connection were used; a click never is, so it shows the
    client saw the close before sending."""
    c = SearchClient(api.url)
    api.close_after = True
    c.search_body({"scene": "s"})
    api.close_after = False
    import time

    time.sleep(0.1)  # the server has closed it by now
    if then == "search":
        c.search_body({"scene": "s"})
    else:
        c.click("r1", "d1")
    assert api.connections == 2 and api.requests == ["/v1/search", f"/v1/{then}"]  # no request lost or sent twice
    c.close()


def test_a_search_cut_off_on_a_kept_connection_is_sent_again_but_a_click_is_not(api):
    c = SearchClient(api.url)
    c.search_body({"scene": "s"})
    api.drop_next = True
    assert c.search_body({"scene": "s"})["ok"]  # once more, on a new connection
    assert api.requests == ["/v1/search"] * 3
    api.drop_next = True
    with pytest.raises(Unavailable):
        c.click("r1", "d1")
    assert api.requests.count("/v1/click") == 1  # a click is never sent twice
    c.close()


def test_a_bad_url_is_named():
    with pytest.raises(BadInput, match="not an http"):
        SearchClient("ftp://example.org")
    with pytest.raises(BadInput, match="not an http"):
        SearchClient("localhost:8080")
