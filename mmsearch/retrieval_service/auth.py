"""Optional API keys for the search API (HTTP and gRPC): off when none are configured (the demo),
required when ``retrieval.api_keys`` lists any (production). Keys are compared as SHA-256 digests
in constant time and never logged."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from mmsearch.errors import PermissionDenied, Unauthenticated

HOW = "send 'Authorization: Bearer <key>' (HTTP, or gRPC metadata 'authorization') or 'X-API-Key: <key>'"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """``keys`` read (search, click, embed, GET); ``write_keys`` read and write (the documents API's PUT and
    DELETE). Keys are on when either list has any; a read key on a write is PermissionDenied (403)."""

    def __init__(self, keys: Iterable[str], write_keys: Iterable[str] = ()):
        self._write = [_digest(k) for k in write_keys if k]
        self._digests = [_digest(k) for k in keys if k] + self._write

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    @staticmethod
    def _match(d: bytes, digests: list[bytes]) -> bool:
        matches = [hmac.compare_digest(d, k) for k in digests]  # every key compared: no early exit on the first match
        return any(matches)

    def check(self, presented: str | None) -> None:
        """Nothing when keys are off or ``presented`` is one of them; Unauthenticated otherwise."""
        if not self._digests:
            return
        if not presented:
            raise Unauthenticated(f"this API requires a key: {HOW}")
        if not self._match(_digest(presented), self._digests):
            raise Unauthenticated("the API key is not valid")

    def check_write(self, presented: str | None) -> None:
        """As check, and the key must be a write key: PermissionDenied (403) for a valid read-only key."""
        self.check(presented)
        if self._digests and not self._match(_digest(presented or ""), self._write):
            raise PermissionDenied("this key may only read: writes need a key of retrieval.write_api_keys")


def key_from(headers: Mapping[str, str]) -> str | None:
    """The key an HTTP request (headers) or gRPC call (metadata, lower-case names) presents."""
    lower = {k.lower(): v for k, v in headers.items()}
    auth = lower.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return lower.get("x-api-key") or None
