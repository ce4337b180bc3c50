"""Optional API keys for the search API (HTTP and gRPC): off when none are configured (the demo),
required when ``retrieval.api_keys`` lists any (production). Keys are compared as SHA-256 digests
in constant time and never logged."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from mmsearch.errors import Unauthenticated

HOW = "send 'Authorization: Bearer <key>' (HTTP, or gRPC metadata 'authorization') or 'X-API-Key: <key>'"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    def __init__(self, keys: Iterable[str]):
        self._digests = [_digest(k) for k in keys if k]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, presented: str | None) -> None:
        """Nothing when keys are off or ``presented`` is one of them; Unauthenticated otherwise."""
        if not self._digests:
            return
        if not presented:
            raise Unauthenticated(f"this API requires a key: {HOW}")
        d = _digest(presented)
        # every key is compared, even after a match: the time taken does not tell which key (or how many) matched
        matched = False
        for k in self._digests:
            matched |= hmac.compare_digest(d, k)
        if not matched:
            raise Unauthenticated("the API key is not valid")


def key_from(headers: Mapping[str, str]) -> str | None:
    """The key an HTTP request (headers) or gRPC call (metadata, lower-case names) presents."""
    lower = {k.lower(): v for k, v in headers.items()}
    auth = lower.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return lower.get("x-api-key") or None
