"""A small Consul KV HTTP stand-in (no Consul binary exists here; docs/environment.md).

Implements what py-consul's kv.get/kv.put use: GET/PUT /v1/kv/<key>, the X-Consul-Index header,
and blocking queries (?index=N&wait=5s return when the index moves past N or the wait expires).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class ConsulStandIn:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None):
        """``token``: ACLs on, default deny — a request without this X-Consul-Token gets 403."""
        self.kv: dict[str, tuple[bytes, int]] = {}
        self.token = token
        self.index = 1
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _key(self) -> str | None:
                m = re.match(r"^/v1/kv/(.+)$", urlparse(self.path).path)
                return m.group(1) if m else None

            def _send(self, code: int, body: bytes, index: int) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Consul-Index", str(index))
                self.send_header("X-Consul-Knownleader", "true")
                self.send_header("X-Consul-Lastcontact", "0")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _denied(self) -> bool:
                if outer.token is not None and self.headers.get("X-Consul-Token") != outer.token:
                    self._send(403, b"Permission denied", outer.index)
                    return True
                return False

            def do_GET(self):
                if self._denied():
                    return None
                key = self._key()
                if key is None:
                    return self._send(404, b"", outer.index)
                q = parse_qs(urlparse(self.path).query)
                wait = float(q.get("wait", ["0s"])[0].rstrip("s") or 0)
                want = int(q.get("index", ["0"])[0] or 0)
                with outer.cond:
                    if want:
                        outer.cond.wait_for(lambda: outer.kv.get(key, (b"", 0))[1] > want or outer.index < want, timeout=min(wait, 30))
                    item = outer.kv.get(key)
                    index = outer.index
                if item is None:
                    return self._send(404, b"", index)
                value, modify = item
                body = json.dumps([{"Key": key, "Value": base64.b64encode(value).decode(), "Flags": 0,
                                    "CreateIndex": modify, "ModifyIndex": modify, "LockIndex": 0}]).encode()
                self._send(200, body, modify)
                return None

            def do_PUT(self):
                if self._denied():
                    return
                key = self._key()
                n = int(self.headers.get("Content-Length") or 0)
                value = self.rfile.read(n)
                cas = parse_qs(urlparse(self.path).query).get("cas")
                with outer.cond:
                    if cas is not None and outer.kv.get(key, (b"", 0))[1] != int(cas[0]):  # check-and-set, as Consul does
                        self._send(200, b"false", outer.index)
                        return
                    outer.index += 1
                    outer.kv[key] = (value, outer.index)
                    outer.cond.notify_all()
                    index = outer.index
                self._send(200, b"true", index)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.addr = f"{host}:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def put(self, key: str, value: str | bytes) -> None:
        data = value.encode() if isinstance(value, str) else value
        with self.cond:
            self.index += 1
            self.kv[key] = (data, self.index)
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
