"""The README's "Bring your own data" steps, run as written (commands parsed from README.md) in a
fresh folder: export, build-index into the embedded servers, point a scene at it, `up --skip-prepare`,
then search the served API. A second build-index while the stack runs must land in the running
stack's stores and go live without a restart."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from mmsearch.config import child_environ, load_config
from mmsearch.launcher.stack import with_free_ports
from mmsearch.runtime.net import wait_until
from mmsearch.runtime.supervisor import descendants

pytestmark = [pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOCS = [{"id": "p1", "text": "Red running shoes, size 42", "category": "shoes"},
        {"id": "p2", "text": "A cast iron frying pan for the kitchen", "category": "kitchen"},
        {"id": "p3", "text": "Wireless noise cancelling headphones", "category": "audio"},
        {"id": "p4", "text": "Children's wooden toy train set", "category": "toys"},
        {"id": "p5", "text": "Waterproof hiking jacket with a hood", "category": "outdoor"},
        {"id": "p7", "text": "Trail running sneakers for muddy paths", "category": "outdoor"}]


def readme_commands() -> list[list[str]]:
    """The shell lines of the README's bring-your-own-data block, with .venv/bin/ made this interpreter's."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Bring your own data", 1)[1].split("```", 2)[1]
    lines = [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert [ln.split()[1] for ln in lines] == ["export", "build-index", "up", "search", "docs", "docs"], lines
    return [[str(BIN / a[len(".venv/bin/"):]) if a.startswith(".venv/bin/") else a for a in shlex.split(ln)] for ln in lines]


def search(url: str, text: str) -> dict:
    req = urllib.request.Request(url + "/v1/search", data=json.dumps({"scene": "text2text", "query": {"text": text}, "top_k": 3}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_bring_your_own_data_as_written(tmp_path):
    export, build, up, search_cmd, put, delete = readme_commands()
    work = tmp_path / "project"
    (work / "deploy").mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "experiments.yaml", work / "deploy" / "experiments.yaml")
    shutil.copytree(ROOT / "deploy" / "rankers", work / "deploy" / "rankers")  # the learned arms' rankers, as in a clone
    # step 1: the documents
    (work / "mydocs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    cfg = with_free_ports(load_config(environ={}))
    env = child_environ(cfg)
    for name in ("MMSEARCH_MILVUS_URI", "MMSEARCH_MONGO_URI", "MMSEARCH_DATA_DIR", "MMSEARCH_MODEL_REPOSITORY",
                 "MMSEARCH_EXPERIMENTS_FILE", "MMSEARCH_IMAGE_ROOT"):
        env.pop(name)  # the defaults, as a newcomer has them; only the ports are moved out of the way

    def run(cmd: list[str]) -> str:
        r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert r.returncode == 0, f"{shlex.join(cmd)}\n{r.stdout}\n{r.stderr}"
        return r.stdout + r.stderr

    run(export)  # step 2
    run(build)  # step 3
    # step 4: the scene edit the README describes
    exp = yaml.safe_load((work / "deploy" / "experiments.yaml").read_text())
    exp["scenes"]["text2text"]["defaults"].update(embed_model="minilm", index="mydocs")
    (work / "deploy" / "experiments.yaml").write_text(yaml.safe_dump(exp))
    proc = subprocess.Popen(up, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    try:
        t0 = time.time()
        for line in proc.stdout:
            lines.append(line)
            if "mmsearch is up" in line or time.time() - t0 > 300:
                break
        assert any("mmsearch is up" in ln for ln in lines), "".join(lines)
        found = re.search(r"search API (http://\S+)/v1/search", "".join(lines))  # (ports 0: picked by the servers)
        assert found, "".join(lines)
        url = found.group(1)
        out = search(url, "shoes for running")
        assert out["results"][0]["id"] == "p1", out
        assert out["results"][0]["doc"]["text"] == "Red running shoes, size 42"
        # step 5: the filtered search from the shell keeps the shoes and drops the (also running) outdoor sneakers
        shown = run(search_cmd)
        assert "p1" in shown and "p7" not in shown and "(1 hit)" in shown, shown
        # a new build while the stack runs: it uses the stack's own servers and is searched at once
        (work / "mydocs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in
                                                   [*DOCS, {"id": "p6", "text": "A mountain bike with disc brakes", "category": "bikes"}]))
        log = run(build)
        assert "indexed 7" in log and "now live" in log, log
        out = search(url, "bicycle for the mountains")
        assert out["results"][0]["id"] == "p6", out
        # step 6: the documents API keeps the live build current: an upsert (one changed, one new), then a delete
        (work / "changes.jsonl").write_text(json.dumps({"id": "p2", "text": "A copper saucepan with a lid", "category": "kitchen"})
                                            + "\n" + json.dumps({"id": "p8", "text": "A felt cowboy hat", "category": "hats"}) + "\n")
        shown = run(put)
        assert "written 2" in shown and "rejected 0" in shown, shown
        assert wait_until(lambda: search(url, "a hat for a cowboy")["results"][0]["id"] == "p8", 5, 0.1)
        assert wait_until(lambda: search(url, "saucepan")["results"][0]["doc"]["text"] == "A copper saucepan with a lid", 5, 0.1)
        run(delete)
        assert wait_until(lambda: "p3" not in [h["id"] for h in search(url, "headphones")["results"]], 5, 0.1)
        kids = descendants(proc.pid)
        assert kids, "up should have started its servers"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, "".join(lines[-30:])
    alive = [p for p in kids if Path(f"/proc/{p}").exists() and "zombie" not in Path(f"/proc/{p}/status").read_text().lower()]
    assert not alive, f"left running after up stopped: {alive}"
