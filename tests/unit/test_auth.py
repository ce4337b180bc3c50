"""API keys: off by default; when configured, every /v1/ call over HTTP and gRPC needs one (401 / UNAUTHENTICATED)."""

from __future__ import annotations

import grpc
import pytest
from test_pipeline import Harness

from mmsearch.errors import Unauthenticated
from mmsearch.protos import search_pb2 as pb
from mmsearch.retrieval_service.auth import ApiKeys, key_from
from mmsearch.retrieval_service.grpc_api import SearchServicer
from mmsearch.retrieval_service.http_app import create_app

KEY = "k3y-" + "x" * 28
BODY = {"scene": "text2text", "query": {"text": "x"}, "force": {"rerank": "none"}}


@pytest.fixture
def guarded():
    h = Harness()
    h.service.auth = ApiKeys([KEY, "other-key-0000000000"])
    yield h
    h.close()


def test_keys_off_by_default_let_everything_through():
    ApiKeys([]).check(None)
    h = Harness()
    try:
        assert create_app(h.service).test_client().post("/v1/search", json=BODY).status_code == 200
    finally:
        h.close()


@pytest.mark.parametrize("headers, code", [
    ({}, 401), ({"Authorization": "Bearer wrong"}, 401), ({"Authorization": f"Basic {KEY}"}, 401),
    ({"Authorization": f"Bearer {KEY}"}, 200), ({"authorization": f"bearer {KEY}"}, 200), ({"X-API-Key": KEY}, 200),
])
def test_http_api_needs_a_valid_key(guarded, headers, code):
    web = create_app(guarded.service).test_client()
    r = web.post("/v1/search", json=BODY, headers=headers)
    assert r.status_code == code, r.get_json()
    if code == 401:
        assert r.get_json()["error"] == "Unauthenticated" and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert KEY not in r.get_data(as_text=True)  # the key is never echoed
    assert web.get("/v1/config", headers=headers).status_code == code  # the config endpoint is behind the same guard


def test_probes_metrics_and_schema_stay_open(guarded):
    web = create_app(guarded.service).test_client()
    assert all(web.get(p).status_code == 200 for p in ("/healthz", "/metrics", "/openapi.json"))


class _Ctx:
    def __init__(self, md):
        self.md = md

    def invocation_metadata(self):
        return self.md

    def time_remaining(self):  # no deadline set by the caller
        return None

    def abort(self, code, details):
        raise RuntimeError(code, details)


def test_grpc_needs_the_key_in_metadata(guarded):
    s = SearchServicer(guarded.service)
    req = pb.SearchRequest(scene="text2text", query=pb.Query(text="x"), force={"rerank": "none"})
    with pytest.raises(RuntimeError) as e:
        s.Search(req, _Ctx([]))
    assert e.value.args[0] == grpc.StatusCode.UNAUTHENTICATED and "requires a key" in e.value.args[1]
    assert s.Search(req, _Ctx([("authorization", f"Bearer {KEY}")])).results


def test_key_from_reads_bearer_or_x_api_key():
    assert key_from({"Authorization": "Bearer  abc "}) == "abc" and key_from({"x-api-key": "k"}) == "k"
    assert key_from({"Authorization": "Bearer "}) is None and key_from({}) is None
    with pytest.raises(Unauthenticated, match="not valid"):
        ApiKeys(["a"]).check("b")


@pytest.mark.parametrize("keys", ['[""]', '["short"]', '["a key with spaces in it"]', '["ключ-длиной-больше-16"]'])
def test_weak_or_empty_keys_are_a_config_error_not_an_open_api(keys):
    from mmsearch.config import load_config
    from mmsearch.errors import ConfigError

    with pytest.raises(ConfigError, match="retrieval.api_keys"):
        load_config(environ={"MMSEARCH_RETRIEVAL_API_KEYS": keys})


def test_the_page_s_key_must_be_sendable():
    from mmsearch.config import load_config
    from mmsearch.errors import ConfigError

    with pytest.raises(ConfigError, match="web.api_key.*printable ASCII"):
        load_config(environ={"MMSEARCH_WEB_API_KEY": "a key with spaces"})
    assert load_config(environ={"MMSEARCH_WEB_API_KEY": "k3y-0123456789abcdef"}).web.api_key == "k3y-0123456789abcdef"


def test_every_key_is_compared_even_after_a_match(monkeypatch):
    """No early exit: the time a check takes does not depend on which key matched."""
    from mmsearch.retrieval_service import auth

    calls: list[bytes] = []
    real = auth.hmac.compare_digest

    def counting(a, b):
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    keys = ApiKeys([KEY, "second-key-000000000000", "third-key-0000000000000"])
    keys.check(KEY)  # the first key matches
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(Unauthenticated):
        keys.check("not-a-key")
    assert len(calls) == 3
