"""The web UI's client of the retrieval service HTTP API; errors come back as mmsearch errors."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

from mmsearch.errors import Unavailable, from_http_status


class RetrievalClient:
    def __init__(self, base_url: str, timeout_s: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.base_url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                err = json.loads(e.read())
            except (json.JSONDecodeError, OSError):
                err = {"message": e.reason}
            msg = err.get("message", str(e.reason))
            raise from_http_status(e.code, msg, err.get("dependency") or f"retrieval service at {self.base_url}") from e
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as e:
            raise Unavailable(f"retrieval service at {self.base_url}", str(getattr(e, "reason", e))) from e

    def search(self, scene: str, user_id: str, top_k: int, text: str | None = None, image: bytes | None = None,
               force: dict[str, str] | None = None) -> dict[str, Any]:
        query = {"text": text} if text is not None else {"image_b64": base64.b64encode(image or b"").decode()}
        body: dict[str, Any] = {"scene": scene, "query": query, "user_id": user_id, "top_k": top_k}
        if force:
            body["force"] = force
        return self._post("/v1/search", body)

    def click(self, request_id: str, doc_id: str, user_id: str) -> None:
        self._post("/v1/click", {"request_id": request_id, "doc_id": doc_id, "user_id": user_id})

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/healthz", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False
