"""Live experiments config: the store keeps the last good config; file and Consul watchers feed it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from consul_standin import ConsulStandIn

from mmsearch.errors import Unavailable
from mmsearch.retrieval_service.config_source import ConsulWatcher, ExperimentStore, FileWatcher
from mmsearch.runtime.net import free_port, wait_until

GOOD_A = "scenes:\n  text2text:\n    defaults: {embed_model: model_a, index: docs}\n"
GOOD_B = "scenes:\n  text2text:\n    defaults: {embed_model: model_b, index: docs}\n"
BAD = "scenes:\n  text2text:\n    defaults: {embed_model: model_c, index: docs, top_k: 0}\n"  # top_k >= 1


def _model(store: ExperimentStore) -> str:
    return store.live.experiments.scenes["text2text"].defaults.embed_model


# --- ExperimentStore --------------------------------------------------------------------------


def test_empty_store_is_not_ready_and_live_is_unavailable():
    store = ExperimentStore()
    assert not store.ready()
    with pytest.raises(Unavailable, match="no valid config loaded yet") as e:
        _ = store.live
    assert e.value.dependency == "experiments config"


def test_valid_offer_goes_live_with_version_and_source():
    store = ExperimentStore()
    before = time.time()
    assert store.offer(GOOD_A, "v1", "test") is True
    live = store.live
    assert store.ready() and (live.version, live.source) == ("v1", "test")
    assert _model(store) == "model_a" and live.loaded_at >= before
    assert store.rejected == 0 and store.last_error is None


def test_bytes_are_accepted():
    store = ExperimentStore()
    assert store.offer(GOOD_B.encode(), "v", "bytes")
    assert _model(store) == "model_b"


def test_invalid_first_offer_is_rejected_and_the_reason_is_reported():
    store = ExperimentStore()
    assert store.offer(BAD, "v1", "origin-x") is False
    assert store.rejected == 1 and not store.ready()
    assert "origin-x" in store.last_error and "top_k" in store.last_error
    with pytest.raises(Unavailable, match="top_k"):  # the reason reaches whoever asks for the config
        _ = store.live


def test_invalid_offer_keeps_the_last_good_config_and_counts():
    store = ExperimentStore()
    store.offer(GOOD_A, "v1", "s")
    good = store.live
    assert store.offer(BAD, "v2", "s") is False
    assert store.offer("scenes: [", "v3", "s") is False
    assert store.live is good and _model(store) == "model_a"
    assert store.rejected == 2 and "not valid YAML" in store.last_error  # the latest reason
    assert store.offer(GOOD_B, "v4", "s") is True
    assert store.live.version == "v4" and _model(store) == "model_b"
    assert store.last_error is None and store.rejected == 2  # a counter, not reset by success


def test_waiters_on_changed_are_woken_by_a_valid_offer():
    store = ExperimentStore()
    seen: list[str] = []

    def waiter():
        with store.changed:
            if store.changed.wait_for(store.ready, timeout=5):
                seen.append(store.live.version)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    store.offer(BAD, "bad", "s")  # a rejected offer does not wake anyone with a non-ready store
    store.offer(GOOD_A, "good", "s")
    t.join(5)
    assert seen == ["good"]


# --- FileWatcher ------------------------------------------------------------------------------


def test_file_watcher_loads_at_construction_with_a_content_version(tmp_path: Path):
    f = tmp_path / "exp.yaml"
    f.write_text(GOOD_A)
    store = ExperimentStore()
    FileWatcher(store, f)
    assert store.ready() and _model(store) == "model_a"
    assert store.live.version.startswith("file-") and store.live.source == str(f)
    f2 = tmp_path / "same.yaml"
    f2.write_text(GOOD_A)
    other = ExperimentStore()
    FileWatcher(other, f2)
    assert other.live.version == store.live.version  # the version is the content hash, not the path or time


def test_file_watcher_only_offers_changed_content(tmp_path: Path):
    f = tmp_path / "exp.yaml"
    f.write_text(BAD)
    store = ExperimentStore()
    w = FileWatcher(store, f)
    for _ in range(3):
        w.poll()
    assert store.rejected == 1  # the same invalid content is not re-validated and re-logged on every poll
    f.write_text(GOOD_A)
    w.poll()
    v1 = store.live.version
    f.write_text(GOOD_B)
    w.poll()
    assert store.live.version != v1 and _model(store) == "model_b"


def test_file_watcher_invalid_then_valid(tmp_path: Path):
    f = tmp_path / "exp.yaml"
    f.write_text(GOOD_A)
    store = ExperimentStore()
    w = FileWatcher(store, f)
    good_version = store.live.version
    f.write_text(BAD)
    w.poll()
    assert store.live.version == good_version and _model(store) == "model_a"
    assert store.rejected == 1 and str(f) in store.last_error and "top_k" in store.last_error
    f.write_text(GOOD_B)
    w.poll()
    assert _model(store) == "model_b" and store.last_error is None


def test_file_watcher_missing_file_then_created(tmp_path: Path):
    f = tmp_path / "later.yaml"
    store = ExperimentStore()
    w = FileWatcher(store, f)
    assert not store.ready()
    assert store.last_error.startswith(f"cannot read {f}")
    with pytest.raises(Unavailable, match="cannot read"):
        _ = store.live
    f.write_text(GOOD_A)
    w.poll()
    assert _model(store) == "model_a" and store.last_error is None


def test_file_watcher_deleted_file_keeps_config_and_restoring_it_clears_the_error(tmp_path: Path):
    f = tmp_path / "exp.yaml"
    f.write_text(GOOD_A)
    store = ExperimentStore()
    w = FileWatcher(store, f)
    f.unlink()
    w.poll()
    assert _model(store) == "model_a"  # the running config stays
    assert "cannot read" in store.last_error
    f.write_text(GOOD_A)  # the same content as before it vanished
    w.poll()
    assert store.last_error is None and _model(store) == "model_a"


def test_file_watcher_thread_follows_changes_and_stops(tmp_path: Path):
    f = tmp_path / "exp.yaml"
    f.write_text(GOOD_A)
    store = ExperimentStore()
    w = FileWatcher(store, f, interval_s=0.02).start()
    try:
        f.write_text(GOOD_B)
        assert wait_until(lambda: _model(store) == "model_b", 5, 0.01)
    finally:
        w.stop()
    assert not w._thread.is_alive()


# --- ConsulWatcher ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def consul():
    c = ConsulStandIn("127.0.0.1", 0)
    yield c
    c.stop()


_keys = iter(range(10_000))


@pytest.fixture()
def key() -> str:
    return f"mmsearch/test-{next(_keys)}"


def test_consul_missing_key_is_reported_not_raised(consul, key):
    store = ExperimentStore()
    w = ConsulWatcher(store, consul.addr, key, wait_s=1)
    w.fetch_once(block=False)
    assert w.connected and not store.ready()
    assert store.last_error == f"consul key {key} does not exist"


def test_consul_value_goes_live_with_its_modify_index(consul, key):
    consul.put(key, GOOD_A)
    modify = consul.kv[key][1]
    store = ExperimentStore()
    w = ConsulWatcher(store, f"http://{consul.addr}", key, wait_s=1)  # the http:// form is accepted too
    w.fetch_once(block=False)
    assert _model(store) == "model_a"
    assert store.live.version.startswith(f"consul-{modify}-")
    assert store.live.source.endswith(f"/{key}")
    assert w.index == str(modify)


def test_consul_unchanged_value_is_not_offered_again(consul, key):
    consul.put(key, BAD)
    store = ExperimentStore()
    w = ConsulWatcher(store, consul.addr, key, wait_s=1)
    w.fetch_once(block=False)
    w.fetch_once(block=False)
    assert store.rejected == 1


def test_consul_invalid_value_keeps_last_good_then_valid_goes_live(consul, key):
    store = ExperimentStore()
    w = ConsulWatcher(store, consul.addr, key, wait_s=1)
    consul.put(key, GOOD_A)
    w.fetch_once(block=False)
    consul.put(key, BAD)
    w.fetch_once(block=False)
    assert _model(store) == "model_a" and store.rejected == 1
    assert key in store.last_error and "top_k" in store.last_error
    consul.put(key, GOOD_B)
    w.fetch_once(block=False)
    assert _model(store) == "model_b" and store.last_error is None


def test_consul_same_index_but_new_value_is_picked_up(consul, key):
    # an agent that lost its state can hand out an index seen before: the value decides
    store = ExperimentStore()
    w = ConsulWatcher(store, consul.addr, key, wait_s=1)
    consul.put(key, GOOD_A)
    w.fetch_once(block=False)
    with consul.cond:
        consul.kv[key] = (GOOD_B.encode(), consul.kv[key][1])
    w.fetch_once(block=False)
    assert _model(store) == "model_b"


def test_consul_deleted_key_keeps_the_running_config(consul, key):
    store = ExperimentStore()
    w = ConsulWatcher(store, consul.addr, key, wait_s=1)
    consul.put(key, GOOD_A)
    w.fetch_once(block=False)
    with consul.cond:
        del consul.kv[key]
        consul.index += 1
    w.fetch_once(block=False)
    assert _model(store) == "model_a" and "does not exist" in store.last_error


def test_consul_blocking_query_returns_on_a_change(consul, key):
    store = ExperimentStore()
    w = ConsulWatcher(store, consul.addr, key, wait_s=5)
    consul.put(key, GOOD_A)
    w.fetch_once(block=False)
    timer = threading.Timer(0.1, consul.put, (key, GOOD_B))
    timer.start()
    t0 = time.monotonic()
    w.fetch_once(block=True)
    elapsed = time.monotonic() - t0
    timer.join()
    assert _model(store) == "model_b"
    assert elapsed < 4  # woken by the change, not by the 5 s wait expiring


def test_consul_unreachable_raises_for_the_loop_to_retry():
    store = ExperimentStore()
    w = ConsulWatcher(store, f"127.0.0.1:{free_port()}", "k", wait_s=1)
    with pytest.raises(Exception):
        w.fetch_once(block=False)
    assert not w.connected and not store.ready()


def test_consul_watcher_thread_follows_changes_and_records_outage(consul, key):
    store = ExperimentStore()
    consul.put(key, GOOD_A)
    w = ConsulWatcher(store, consul.addr, key, wait_s=1).start()
    try:
        assert wait_until(lambda: store.ready() and _model(store) == "model_a", 5, 0.01)
        consul.put(key, GOOD_B)  # arrives through the blocking query
        assert wait_until(lambda: _model(store) == "model_b", 5, 0.01)
        consul.put(key, BAD)
        assert wait_until(lambda: store.rejected == 1, 5, 0.01)
        assert _model(store) == "model_b"
    finally:
        w._stop.set()
        consul.put(key, GOOD_B)  # wake the blocking query so stop() returns at once
        w.stop()
    assert not w._thread.is_alive()

    down = ExperimentStore()
    w2 = ConsulWatcher(down, f"127.0.0.1:{free_port()}", key, wait_s=1).start()
    try:
        assert wait_until(lambda: down.last_error is not None, 5, 0.01)
        assert "consul at 127.0.0.1" in down.last_error and not w2.connected
    finally:
        w2.stop()
    assert not w2._thread.is_alive()


def test_consul_acl_token_reads_and_a_missing_token_is_reported_by_name(tmp_path, caplog):
    """ACLs on (default deny): the watcher and push send consul.token; without it the error says
    permission denied and names the setting, and the token itself appears in no log line."""
    from mmsearch.config import load_config
    from mmsearch.errors import Unauthenticated
    from mmsearch.offline.experiments_push import push

    secret = "s3cr3t-acl-token-0123456789"
    acl = ConsulStandIn("127.0.0.1", 0, token=secret)
    try:
        f = tmp_path / "exp.yaml"
        f.write_text(GOOD_A)
        with pytest.raises(Unauthenticated, match="permission denied writing mmsearch/x.*MMSEARCH_CONSUL_TOKEN"):
            push(f, acl.addr, "mmsearch/x")
        assert push(f, acl.addr, "mmsearch/x", secret) == 1
        store = ExperimentStore()
        denied = ConsulWatcher(store, acl.addr, "mmsearch/x", wait_s=1).start()
        try:
            assert wait_until(lambda: store.last_error is not None and "permission denied" in store.last_error, 5)
        finally:
            denied.stop()
        ok_store = ExperimentStore()
        w = ConsulWatcher(ok_store, acl.addr, "mmsearch/x", wait_s=1, token=secret)
        w.fetch_once(block=False)
        assert _model(ok_store) == "model_a"
        cfg = load_config(environ={"MMSEARCH_CONSUL_TOKEN": secret})
        assert cfg.consul.token == secret and secret not in repr(cfg)
        assert all(secret not in r.getMessage() for r in caplog.records)
    finally:
        acl.stop()
