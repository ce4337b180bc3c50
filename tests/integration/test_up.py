"""`mmsearch up` on tiny data: every part starts in order, reports healthy, serves a search, and
Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
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
from mmsearch.runtime.net import http_ok, wait_until
from mmsearch.runtime.supervisor import descendants

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


def test_up_starts_checks_and_stops_cleanly(tmp_path, tiny_text):
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
        "data_dir": str(data), "model_repository": str(repo), "experiments_file": str(tmp_path / "experiments.yaml")}))
    env = child_environ(cfg)
    env.pop("MMSEARCH_MILVUS_URI")
    env.pop("MMSEARCH_MONGO_URI")
    proc = subprocess.Popen([sys.executable, "-m", "mmsearch", "up", "--skip-prepare"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        t0 = time.time()
        for line in proc.stdout:
            lines.append(line)
            if "mmsearch is up" in line or time.time() - t0 > 240:
                break
        assert any("mmsearch is up" in line for line in lines), "".join(lines)
        # every port was 0: each server bound a free one itself; the launcher reports them, and so
        # does <data_dir>/run/stack.json, which `up --check` (another process) reads
        live = running_config(cfg)
        assert live.web.port and live.retrieval.http_port and live.serving.http_port and live.preprocess.port
        assert f"http://localhost:{live.web.port} " in lines[-1], lines[-1]
        assert f"http://{live.retrieval.host}:{live.retrieval.http_port}/v1/search" in lines[-1], lines[-1]
        children = descendants(proc.pid)
        assert len(children) >= 7  # secantusdb, milvus, serve-models (+ tritonserver), preprocess, retrieval, gate, web
        # the search API's port is the admission gate's, the service's own HTTP a free port behind it
        ports = json.loads((data / "run" / "stack.json").read_text())["ports"]
        assert ports["gate"]["http"] == live.retrieval.http_port != ports["retrieval"]["http"]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{live.retrieval.http_port}/metrics", timeout=30).read().decode()
        assert "mmsearch_admission" in metrics and 'mmsearch_gate{what="capacity"}' in metrics  # the service's and the gate's
        check = subprocess.run([sys.executable, "-m", "mmsearch", "up", "--check"], env=env, capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.count("ok  ") == 5 and "gate" in check.stdout  # the gate and the service behind it apart
        r = live.retrieval
        assert http_ok(f"http://127.0.0.1:{live.serving.http_port}/v2/health/ready")
        assert http_ok(f"http://{r.host}:{r.http_port}/readyz") and http_ok(f"http://127.0.0.1:{live.web.port}/healthz")
        try:
            page = urllib.request.urlopen(f"http://127.0.0.1:{live.web.port}/?scene=text2text&q=tiny+document+7", timeout=30).read().decode()
        except urllib.error.HTTPError as e:  # say why: the page's error detail and what the retrieval service logged
            logs = (data / "logs" / "retrieval.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"{e}: {e.read().decode(errors='replace')[-1500:]}\n--- retrieval.log ---\n{logs}") from e
        # the page echoes the query in <title> and the search box: look for the indexed document d7 in the results
        results = re.search(r'<ol class="cards" id="results".*?</ol>', page, re.S)
        assert results is not None, page
        assert 'data-doc="d7"' in results.group(0) and '<p class="text">tiny document 7</p>' in results.group(0)
        assert (data / "logs" / "retrieval.log").is_file() and (data / "logs" / "triton.log").is_file()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        assert "stopped" in out
        assert running_config(cfg) == cfg and not (data / "run" / "stack.json").exists()  # the record goes with the stack
        assert wait_until(lambda: not [c for c in children if alive(c)], 20), f"left behind: {[c for c in children if alive(c)]}"
    finally:
        if proc.poll() is None:  # a failed assertion: take down the stack's children too (own sessions)
            kids = descendants(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            for k in kids:
                try:
                    os.killpg(k, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
    down = subprocess.run([sys.executable, "-m", "mmsearch", "up", "--check"], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "DOWN" in down.stdout
