"""`mmsearch up` heals itself: each of its children SIGKILLed in turn under c=1 search load is started
again (the embedded stores on fresh ports, found by the services through their endpoint files; our
servers on the ports they had), searches answer again within 15 s (Milvus: 20 s, its own restart is
slower), and the stack stays up.

    make test-faults        # = pytest -m faults
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mmsearch.config import child_environ, load_config
from mmsearch.launcher.stack import with_free_ports
from mmsearch.offline.indexing.build import BuildOptions, build_index
from mmsearch.runtime.embedded import MilvusServer, SecantusServer
from mmsearch.runtime.endpoints import running_config
from mmsearch.runtime.net import grpc_serving, http_ok, wait_until
from mmsearch.runtime.supervisor import descendants

pytestmark = [pytest.mark.integration, pytest.mark.faults]
# searches answer again within 15 s of a child's kill; Milvus standalone itself takes longer to start again
# after a SIGKILL (the dead server's etcd sessions expire, its components find each other, the collection is
# loaded again: 12.3-12.6 s to a first search on this 2-core box, docs/architecture.md; 12.5-12.7 s in two
# fresh-clone CI runs on 2026-12-07 and 22.5 s in a third, whose session expiry came late), so it gets 30 s:
# the same bound test_faults gives a returning Milvus
WITHIN_S = {"milvus": 30.0}
BODY = {"scene": "text2text", "query": {"text": "tiny document 7"}}
# what each direct child of `mmsearch up` runs (setpriv execs the command itself)
SIGNATURES = {"milvus": "milvus\0run\0standalone", "mongo": "mmsearch.runtime.secantusd", "triton": "serve-models",
              "preprocess": "serve-preprocess", "retrieval": "serve-retrieval", "gate": "serve-gate", "web": "serve-web"}


def children(pid: int) -> dict[str, int]:
    out = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
        for k in kids:
            try:
                cmd = Path(f"/proc/{k}/cmdline").read_text()
            except OSError:
                continue
            for name, sig in SIGNATURES.items():
                if sig in cmd:
                    out[name] = k
    return out


def search(url: str) -> int:
    req = urllib.request.Request(url + "/v1/search", data=json.dumps(BODY).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status if json.loads(r.read()).get("results") else 0
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, http.client.HTTPException):  # (IncompleteRead: killed while it sent the answer)
        return -1  # no answer at all (connection refused: the admission gate, the search API's front, is down)


def page(web: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/?scene=text2text&q=tiny+document+7", timeout=15) as r:
            return r.status if 'data-doc="d7"' in r.read().decode() else 0
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, http.client.HTTPException):
        return -1


class Load:
    """c=1 closed-loop searches in the background: (start, end, status) of each."""

    def __init__(self, url: str):
        self.url, self.results, self._stop = url, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            code = search(self.url)
            self.results.append((t0, time.monotonic(), code))
            if code != 200:
                time.sleep(0.05)

    def first_good_after(self, t: float) -> float | None:
        return next((end for start, end, code in self.results if start >= t and code == 200), None)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join(timeout=30)


def _kill_and_measure(name: str, proc: subprocess.Popen, live, url: str, load: Load, lines: list[str]) -> str:
    """SIGKILL the stack's child ``name``; wait for its restart and for searches; one line of timings."""
    old = children(proc.pid)[name]
    t0 = time.monotonic()
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: children(proc.pid).get(name) not in (None, old), 60, 0.05), \
        f"{name} not started again:\n{''.join(lines[-20:])}"
    # restarted = its own health answers again (on the same port for our servers)
    healthy = {"triton": lambda: http_ok(f"http://127.0.0.1:{live.serving.http_port}/v2/health/ready"),
               "preprocess": lambda: grpc_serving(f"127.0.0.1:{live.preprocess.port}"),
               "web": lambda: http_ok(f"http://127.0.0.1:{live.web.port}/healthz")}.get(name, lambda: http_ok(url + "/readyz"))
    assert wait_until(healthy, 90, 0.1), f"{name} not healthy again:\n{''.join(lines[-20:])}"
    restarted = time.monotonic() - t0
    assert wait_until(lambda: load.first_good_after(t0) is not None, 60, 0.05), \
        f"no search answered within 60 s of {name}'s kill: {load.results[-5:]}"
    first = (load.first_good_after(t0) or t0) - t0
    assert first <= WITHIN_S.get(name, 15.0), f"searches answered again {first:.1f} s after {name}'s kill"
    got_page = None
    if name == "web":
        assert wait_until(lambda: page(live.web.port) == 200, 15, 0.1), "the page does not answer again"
        got_page = time.monotonic() - t0
    assert wait_until(lambda: http_ok(url + "/readyz"), 60, 0.2), f"/readyz not 200 again after {name}"
    during = [code for start, end, code in load.results if start >= t0 and end <= t0 + first]
    assert proc.poll() is None, "".join(lines[-30:])
    return (f"{name}: first good search {first:.1f} s after the kill" + (f", page {got_page:.1f} s" if got_page is not None else "")
            + f"; healthy again {restarted:.1f} s; meanwhile {len(during)} searches: "
            + ", ".join(f"{c} x{during.count(c)}" for c in sorted(set(during))))


def test_up_restarts_each_killed_child_and_keeps_serving(tmp_path, tiny_text):
    from mmsearch.offline.export import export_model

    data, repo = tmp_path / "data", tmp_path / "repo"
    export_model(tiny_text, repo, "tiny")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"id": f"d{i}", "text": f"tiny document {i}"}) for i in range(50)) + "\n")
    with SecantusServer(data / "mongo") as mongo, MilvusServer(data / "milvus-standalone") as milvus:
        build_index(BuildOptions(index="texts", docs=docs, model="tiny", repo=repo, data_dir=data,
                                 milvus_uri=milvus.uri, mongo_uri=mongo.uri, progress=False))
    (tmp_path / "experiments.yaml").write_text("scenes:\n  text2text:\n    defaults: {embed_model: tiny, index: texts, top_k: 5}\n")
    cfg = with_free_ports(load_config(environ={}, overrides={
        "data_dir": str(data), "model_repository": str(repo), "experiments_file": str(tmp_path / "experiments.yaml"),
        "retrieval": {"request_timeout_s": 5, "stage_timeout_s": 3}}))
    env = child_environ(cfg)
    env.pop("MMSEARCH_MILVUS_URI")
    env.pop("MMSEARCH_MONGO_URI")
    proc = subprocess.Popen([sys.executable, "-m", "mmsearch", "up", "--skip-prepare"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    up = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "mmsearch is up" in line:
                up.set()

    threading.Thread(target=read, daemon=True).start()
    report = []
    try:
        assert up.wait(240), "".join(lines)
        live = running_config(cfg)
        url = f"http://127.0.0.1:{live.retrieval.http_port}"
        before = children(proc.pid)
        assert set(before) == set(SIGNATURES), before
        with Load(url) as load:
            assert wait_until(lambda: load.first_good_after(0) is not None, 30), load.results[-3:]
            for name in ("milvus", "mongo", "triton", "preprocess", "retrieval", "gate", "web"):
                report.append(_kill_and_measure(name, proc, live, url, load, lines))
        print("\n" + "\n".join(report))
        assert all(code in (200, 503, -1) for _, _, code in load.results), {c for _, _, c in load.results}
        for name in SIGNATURES:  # the launcher said what it did (its line comes once the child is ready)
            assert wait_until(lambda n=name: f"{n} restarted in" in "".join(lines), 10), "".join(lines[-10:])
            assert f"{name} exited with code -9; restarting it" in "".join(lines)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0, "".join(lines[-30:])
        assert not descendants(proc.pid)
    finally:
        if proc.poll() is None:
            kids = descendants(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            for k in kids:
                try:
                    os.killpg(k, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
