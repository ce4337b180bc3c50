"""The Consul client both the experiments watcher and `mmsearch experiments push` use.

With ACLs on, Consul answers 403 to a request without a token that may read (or write) the key;
``consul.token`` (MMSEARCH_CONSUL_TOKEN) is sent as X-Consul-Token and never logged (the config
field is repr=False; messages name the address and key, not the token).
"""

from __future__ import annotations

from typing import Any


def consul_client(addr: str, token: str = "", timeout_s: float = 5.0) -> Any:
    import consul

    host, _, port = addr.replace("http://", "").partition(":")
    return consul.Consul(host=host, port=int(port or 8500), token=token or None, connections_timeout=timeout_s)


def acl_denied(e: BaseException) -> bool:
    """A 403 from Consul: the token is missing, unknown, or lacks the key's policy."""
    import consul

    return isinstance(e, consul.ACLPermissionDenied) or "Permission denied" in str(e) or "ACL not found" in str(e)
