"""The embedded servers' plumbing that needs no server: Milvus config generation, endpoint files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import yaml

from mmsearch.runtime import embedded as E


def _ports() -> dict[str, int]:
    return {k: 40000 + i for i, k in enumerate(E.MilvusServer.PORT_KEYS)}


def test_milvus_config_fills_every_template_variable(tmp_path):
    (tmp_path / "configs").mkdir()
    text = E.milvus_config(tmp_path, _ports(), 41999, graceful_time_ms=700)
    assert "{{" not in text and "}}" not in text
    cfg = yaml.safe_load(text)
    assert cfg["proxy"]["port"] == _ports()["proxy_port"] and cfg["rootCoord"]["port"] == _ports()["root_coord_port"]
    assert cfg["etcd"]["endpoints"] == f"localhost:{_ports()['etcd_port']}"
    assert cfg["etcd"]["use"]["embed"] is True and cfg["etcd"]["data"]["dir"] == str(tmp_path / "data" / "etcd.data")
    assert cfg["localStorage"]["path"] == str(tmp_path / "data")
    # every component advertises loopback; none keeps a fixed default port
    for section in ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode"):
        assert cfg[section]["ip"] == "127.0.0.1", section
    assert cfg["queryNode"]["segcore"]["interimIndex"]["enableIndex"] is False
    assert cfg["common"]["gracefulTime"] == 700 and cfg["common"]["session"]["ttl"] == 5
    seg = cfg["dataCoord"]["segment"]  # a sealed segment is not "small": never merged and indexed a second time
    # and a build's last, part-filled segment is not "small" unless under a tenth of a sealed one: it is kept and
    # indexed once, not squeezed into a full segment whose graph is then built again after the seal has returned
    assert seg["smallProportion"] <= seg["sealProportion"] / 10
    assert seg["compactableProportion"] >= seg["smallProportion"]  # (Milvus requires it)
    # nor compacted at its flush for too many statslogs (one per insert-buffer sync; over 2 x maxSize / the 64 MB
    # binlog size, Milvus 2.3 rewrites the segment and indexes it again): a sealed segment's syncs stay well under
    syncs = seg["sealProportion"] * seg["maxSize"] * 2**20 / cfg["dataNode"]["segment"]["insertBufSize"]
    compacted_over = 2 * seg["maxSize"] * 2**20 / 2**26
    assert syncs <= compacted_over / 2  # (half: a segment's real bytes run past Milvus's estimate)


def test_embedded_etcd_gets_its_own_loopback_ports(tmp_path):
    (tmp_path / "configs").mkdir()
    cfg = yaml.safe_load(E.milvus_config(tmp_path, _ports(), 41999, 1000))
    etcd = yaml.safe_load((tmp_path / "configs" / "etcd.yaml").read_text())
    assert cfg["etcd"]["config"]["path"] == str(tmp_path / "configs" / "etcd.yaml")
    assert etcd["listen-client-urls"] == f"http://127.0.0.1:{_ports()['etcd_port']}"
    assert etcd["listen-peer-urls"] == "http://127.0.0.1:41999"  # not etcd's fixed 2379/2380
    assert etcd["initial-cluster"] == "default=http://127.0.0.1:41999"


def test_milvus_binaries_are_unpacked_once(tmp_path):
    first = E.milvus_binaries()
    assert (first / "milvus").is_file() and os.access(first / "milvus", os.X_OK)
    mtime = (first / "milvus").stat().st_mtime
    assert E.milvus_binaries() == first and (first / "milvus").stat().st_mtime == mtime


@pytest.fixture
def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


def test_a_live_endpoint_is_found_and_a_dead_one_is_not(tmp_path, listener):
    data = tmp_path / "milvus-standalone"
    data.mkdir()
    assert E.running_endpoint(data) is None  # nothing recorded
    E._write_endpoint(data, f"http://127.0.0.1:{listener}", os.getpid())
    assert E.running_endpoint(data) == f"http://127.0.0.1:{listener}"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    E._write_endpoint(data, f"http://127.0.0.1:{listener}", int(dead.stdout))
    assert E.running_endpoint(data) is None  # its process is gone
    E._write_endpoint(data, "http://127.0.0.1:1", os.getpid())
    assert E.running_endpoint(data) is None  # alive, but nothing listens there
    (tmp_path / "milvus-standalone.endpoint.json").write_text("{not json")
    assert E.running_endpoint(data) is None


def test_clearing_an_endpoint_only_removes_ones_own(tmp_path):
    data = tmp_path / "mongo"
    data.mkdir()
    E._write_endpoint(data, "mongodb://127.0.0.1:5/", 12345)
    E._clear_endpoint(data, 999)
    assert (tmp_path / "mongo.endpoint.json").exists()  # another server's record stays
    E._clear_endpoint(data, 12345)
    assert not (tmp_path / "mongo.endpoint.json").exists()


class _Fake:
    def __init__(self, uri: str) -> None:
        self.uri, self.stopped = uri, False

    def stop(self) -> None:
        self.stopped = True


def test_attach_uses_the_running_server_and_starts_none(tmp_path, listener):
    data = tmp_path / "milvus-standalone"
    data.mkdir()
    E._write_endpoint(data, f"http://127.0.0.1:{listener}", os.getpid())
    started = []
    with E.attach_or_start(data, lambda: started.append(1) or _Fake("x")) as uri:
        assert uri == f"http://127.0.0.1:{listener}"
    assert started == []


def test_otherwise_a_server_is_started_for_the_block_and_stopped(tmp_path):
    fake = _Fake("http://127.0.0.1:7")
    with pytest.raises(RuntimeError), E.attach_or_start(tmp_path / "m", lambda: fake) as uri:
        assert uri == "http://127.0.0.1:7" and not fake.stopped
        raise RuntimeError("the tool failed")
    assert fake.stopped  # stopped even when the block fails


def test_embedded_dirs_are_the_documented_ones(tmp_path):
    assert E.embedded_dir("milvus", tmp_path) == tmp_path / "milvus-standalone"
    assert E.embedded_dir("mongo", tmp_path) == tmp_path / "mongo"
    assert E.running_store("milvus", tmp_path) is None


def test_a_missing_embedded_server_names_the_extra(monkeypatch):
    """The production image installs without the `embedded` extra: code that needs those packages says which extra brings them."""
    from mmsearch.errors import Unavailable
    from mmsearch.runtime import secantusd

    monkeypatch.setitem(sys.modules, "milvus", None)  # import milvus -> ImportError
    with pytest.raises(Unavailable, match=r"mmsearch\[embedded\]"):
        E._milvus_package()
    monkeypatch.setitem(sys.modules, "secantus", None)
    with pytest.raises(Unavailable, match=r"`secantusdb` package .*`embedded` extra"):
        secantusd.main([])
    with pytest.raises(Unavailable, match=r"mmsearch\[embedded\]"):
        E._bin("secantusd-py-not-installed", "secantusdb")


def test_a_milvus_lite_file_without_the_extra_names_it(monkeypatch, tmp_path):
    from mmsearch.clients.vectors import VectorStore
    from mmsearch.errors import Unavailable

    monkeypatch.setitem(sys.modules, "milvus_lite", None)
    with pytest.raises(Unavailable, match=r"`milvus-lite` package .*mmsearch\[embedded\]"):
        VectorStore(str(tmp_path / "v.db"))
