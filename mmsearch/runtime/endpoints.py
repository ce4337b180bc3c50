"""Where a running stack's servers listen, when their ports were picked at start.

A port of 0 in the config means "any free port": each of our servers binds one itself and reports it
(--ports-file), so no other process can take it between choosing and binding. The launcher then
records the ports of the whole stack in <data_dir>/run/stack.json; tools started later over the same
data dir (`mmsearch up --check`, `mmsearch search`) read them from there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mmsearch.config import Config

STACK_FILE = "stack.json"
SERVICE_HOST = "127.0.0.1"  # where the retrieval service's own HTTP listens behind its admission gate (loopback only)
SERVICES = ("triton", "preprocess", "retrieval", "gate", "web")  # in the order their ports apply (the gate's after the service's)


def stack_file(config: Config) -> Path:
    return Path(config.data_dir) / "run" / STACK_FILE


def bound(config: Config, service: str, ports: dict[str, int]) -> Config:
    """The config with the ports a service reported (what later services and the launcher's output use)."""
    section, update = {
        "triton": ("serving", dict(http_port=ports.get("http"), grpc_port=ports.get("grpc"), metrics_port=ports.get("metrics"))),
        "preprocess": ("preprocess", dict(port=ports.get("grpc"), metrics_port=ports.get("metrics"))),
        "retrieval": ("retrieval", dict(http_port=ports.get("http"), grpc_port=ports.get("grpc"))),
        "gate": ("retrieval", dict(http_port=ports.get("http"))),  # in front of the service: the search API's HTTP
        "web": ("web", dict(port=ports.get("http"))),
    }[service]
    sub = getattr(config, section)
    return config.model_copy(update={section: sub.model_copy(update={k: v for k, v in update.items() if v is not None})})


def _started(pid: int) -> str | None:
    """When a process started (clock ticks since boot, from /proc) with the boot it belongs to: a pid
    reused by another process after a crash or a reboot does not match the record."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; the comm may hold spaces
    return f"{boot}:{fields[19]}"  # field 22 of stat: starttime


def record_stack(config: Config, ports: dict[str, dict[str, int]]) -> Path:
    """Write this process's pid (and when it started) and the ports its services bound, atomically."""
    path = stack_file(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "started": _started(os.getpid()), "ports": ports,
                               "image_root": str(Path(config.image_root).resolve())}))
    os.replace(tmp, path)
    return path


def clear_stack(config: Config) -> None:
    """Remove the record of this process's stack (a newer launcher's record is left alone)."""
    path = stack_file(config)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def _live_record(config: Config) -> dict | None:
    """The stack record, if the launcher that wrote it still runs (same pid, same start: not a reused pid)."""
    try:
        data = json.loads(stack_file(config).read_text())
        pid = int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    started = _started(pid) if pid > 0 else None
    return data if started is not None and started == data.get("started") else None


def stack_ports(config: Config) -> dict[str, dict[str, int]]:
    """The ports each service of the running stack bound (empty when none runs): the gate's and, behind
    it, the retrieval service's own HTTP port among them."""
    data = _live_record(config)
    ports = data.get("ports") if data is not None else None
    return ports if isinstance(ports, dict) else {}


def stack_pid(config: Config) -> int | None:
    """The pid of the `mmsearch up` running over this data dir, if one runs."""
    data = _live_record(config)
    return int(data["pid"]) if data is not None else None


def running_config(config: Config) -> Config:
    """The config with the ports of the stack that `mmsearch up` runs over its data dir, if one runs
    (and the image folder it serves, unless this config names one); otherwise the config as it is."""
    data = _live_record(config)  # none recorded, unreadable, or its launcher is gone (the pid may be reused)
    ports = data.get("ports") if data is not None else None
    if not isinstance(ports, dict):
        return config
    root = data.get("image_root") if data is not None else None
    if isinstance(root, str) and root and Path(config.image_root) == Path("."):
        config = config.model_copy(update={"image_root": Path(root)})
    for service in SERVICES:
        got = ports.get(service)
        if isinstance(got, dict):
            config = bound(config, service, {k: v for k, v in got.items() if isinstance(v, int) and 0 < v < 65536})
    return config
