"""The record of a running stack's ports (picked at start): written by the launcher, read by tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mmsearch.config import load_config
from mmsearch.runtime.endpoints import bound, clear_stack, record_stack, running_config, stack_file


def _cfg(tmp_path):
    return load_config(environ={}, overrides={"data_dir": str(tmp_path), "web": {"port": 0}, "retrieval": {"http_port": 0}})


def test_a_running_stack_s_ports_are_found_by_another_process(tmp_path):
    cfg = _cfg(tmp_path)
    assert running_config(cfg) == cfg  # nothing recorded: the config as it is
    record_stack(cfg, {"web": {"http": 18090}, "retrieval": {"http": 18080, "grpc": 15051},
                       "triton": {"http": 18000, "grpc": 18001, "metrics": 18002}, "preprocess": {"grpc": 16051}})
    live = running_config(cfg)
    assert (live.web.port, live.retrieval.http_port, live.retrieval.grpc_port) == (18090, 18080, 15051)
    assert (live.serving.grpc_port, live.preprocess.port) == (18001, 16051)
    assert live.preprocess.metrics_port == cfg.preprocess.metrics_port  # not reported: left as configured
    clear_stack(cfg)
    assert not stack_file(cfg).exists() and running_config(cfg) == cfg


def test_a_dead_launcher_s_record_and_a_garbled_one_are_ignored(tmp_path):
    cfg = _cfg(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stack_file(cfg).parent.mkdir(parents=True)
    stack_file(cfg).write_text(json.dumps({"pid": int(dead.stdout), "ports": {"web": {"http": 18090}}}))
    assert running_config(cfg) == cfg  # its launcher is gone: those ports mean nothing now
    # a live pid that is not the launcher that wrote the record (reused after a crash or a reboot)
    stack_file(cfg).write_text(json.dumps({"pid": os.getpid(), "started": "another-boot:1", "ports": {"web": {"http": 18090}}}))
    assert running_config(cfg) == cfg
    record_stack(cfg, {})
    started = json.loads(stack_file(cfg).read_text())["started"]
    for garbage in ("", "{", "[]", json.dumps({"pid": os.getpid(), "started": started, "ports": []}),
                    json.dumps({"pid": -1, "started": started, "ports": {"web": {"http": 18090}}}),
                    json.dumps({"pid": os.getpid(), "started": started, "ports": {"web": {"http": "x"}, "evil": {"http": 1}}})):
        stack_file(cfg).write_text(garbage)
        assert running_config(cfg).web.port == 0, garbage
    # a newer launcher's record is not removed by an older one
    stack_file(cfg).write_text(json.dumps({"pid": int(dead.stdout), "ports": {}}))
    clear_stack(cfg)
    assert stack_file(cfg).exists()


def test_bound_changes_only_the_reported_ports(tmp_path):
    cfg = _cfg(tmp_path)
    out = bound(cfg, "preprocess", {"grpc": 16051})
    assert out.preprocess.port == 16051 and out.preprocess.metrics_port == cfg.preprocess.metrics_port
    assert out.web == cfg.web and out.retrieval == cfg.retrieval


def test_the_running_stack_s_image_folder_is_found_unless_the_config_names_one(tmp_path):
    images = tmp_path / "stamps"
    images.mkdir()
    stack = _cfg(tmp_path).model_copy(update={"image_root": images})
    record_stack(stack, {"web": {"http": 18090}})
    assert running_config(_cfg(tmp_path)).image_root == images.resolve()  # a tool with the default root
    own = _cfg(tmp_path).model_copy(update={"image_root": tmp_path / "mine"})
    assert running_config(own).image_root == tmp_path / "mine"
    clear_stack(stack)
