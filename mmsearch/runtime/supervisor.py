"""One way to run a child server process: started, awaited, watched and stopped the same everywhere.

Every server the project launches (secantusdb, Milvus, tritonserver, our own services) runs in its
own process group, gets SIGTERM if its launcher dies, logs to a file, is awaited by a readiness
probe, and on stop gets SIGTERM for the group then SIGKILL, so nothing outlives it. A child that
exits on its own is reported as ``ProcessDied`` naming it and its log; a ``Supervisor`` starts it
again with backoff, and only a crash loop (``RestartPolicy``) ends it.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from mmsearch.errors import ProcessDied, Unavailable
from mmsearch.runtime.net import PORT_CLASH, wait_until

log = logging.getLogger("mmsearch.runtime.supervisor")
C = TypeVar("C")


@functools.cache
def _setpriv() -> str | None:
    """util-linux's setpriv, if it has --pdeathsig (2.33+; BusyBox's has not): probed once."""
    found = shutil.which("setpriv")
    if found is None:
        return None
    try:
        ok = subprocess.run([found, "--pdeathsig", "TERM", "--", "true"], capture_output=True, timeout=5, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        log.warning("%s lacks --pdeathsig: children will not be stopped if the launcher is killed", found)
    return found if ok else None


def die_with_parent(cmd: list[str]) -> list[str]:
    """``cmd`` run so that it gets SIGTERM if the process that started it dies (even by SIGKILL), so a
    crashed launcher leaves no orphaned servers behind: ``setpriv --pdeathsig`` sets PR_SET_PDEATHSIG
    and execs it. Not a ``preexec_fn``: that makes Python fork() instead of vfork(), the fork runs
    gRPC's fork handlers, and gRPC's restarted poller then aborted the child on the epoll fd that
    close_fds had closed (``epoll_wait error: Bad file descriptor``, exit -6; 2 starts of 6 on one
    afternoon; grpc/grpc#43055). Without a setpriv that has --pdeathsig the child lacks the safety net
    (a warning says so once)."""
    setpriv = _setpriv()
    return [setpriv, "--pdeathsig", "TERM", "--", *cmd] if setpriv else list(cmd)


def stop_event(reload: threading.Event | None = None) -> threading.Event:
    """An event set by SIGTERM or SIGINT (servers run until it is set, then stop cleanly); SIGHUP
    sets ``reload`` when given."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if reload is not None:
        signal.signal(signal.SIGHUP, lambda *_: reload.set())
    return stop


class ChildProcess:
    """A started child server. ``ready`` is its readiness probe (called until true or timeout)."""

    def __init__(self, name: str, cmd: list[str], log_file: Path, ready: Callable[[], bool],
                 startup_timeout_s: float = 30.0, env: Mapping[str, str] | None = None, stop_timeout_s: float = 15.0,
                 cwd: Path | None = None):
        self.name, self.log_file, self.stop_timeout_s = name, log_file, stop_timeout_s
        self._ready = ready
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as out:
            self._log_from = out.tell()  # this start's own lines begin here (the file is appended to)
            self.proc = subprocess.Popen(die_with_parent(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=dict(env) if env is not None else None, cwd=cwd)
        if not wait_until(lambda: self.ready() or not self.alive(), startup_timeout_s, 0.1) or not self.ready():
            died = not self.alive()
            self.stop()
            what = f"exited with code {self.proc.returncode}" if died else f"not ready after {startup_timeout_s:.0f} s"
            cls = ProcessDied if died else Unavailable
            raise cls(name, f"{what}; log tail:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ready(self) -> bool:
        return self.alive() and self._ready()

    def check(self) -> None:
        """Raise ProcessDied if the child has exited."""
        if not self.alive():
            raise ProcessDied(self.name, f"exited with code {self.proc.returncode}; see {self.log_file}")

    def log_tail(self, chars: int = 2000) -> str:
        """The end of what this start wrote to its log (an earlier run's lines are not its story)."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(self._log_from)
                return f.read().decode(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; returns the exit code."""
        timeout = self.stop_timeout_s if timeout is None else timeout
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", self.name, timeout)
            except ProcessLookupError:
                pass
        try:  # helpers in the same group (e.g. Triton's python stubs) must not outlive it
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        # a killed helper is gone only once the kernel has ended it: return after that, not while it still runs
        # (a test that found one a moment after stop() showed it)
        wait_until(lambda: not group_members(self.proc.pid), 5.0, 0.01)
        return self.proc.returncode

    def __enter__(self) -> "ChildProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def retry_port_clash(start: Callable[[], C], retry: bool = True, attempts: int = 3) -> C:
    """Start a third-party server on ports picked for it, again on fresh ones if one was taken meanwhile.

    A binary we do not control (secantusdb, Milvus, tritonserver) cannot bind port 0 and report what it
    got, so the launcher picks free ports and passes them; another process can bind one in between. That
    start dies (or never gets ready) saying "address already in use"; ``start`` picks fresh ports each call.
    Ports the user configured are never retried (``retry=False``): the clash is reported as it is."""
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except Unavailable as e:  # (ProcessDied is one)
            if not retry or attempt == attempts or not PORT_CLASH.search(e.message):
                raise
            log.warning("%s: a port it was given was taken meanwhile; starting it again on fresh ports (attempt %d of %d)",
                        e.dependency or "server", attempt + 1, attempts)
    raise AssertionError("unreachable")


class Child(Protocol):
    """What a Supervisor watches (a ChildProcess; a fake in the unit tests)."""

    name: str
    log_file: Path

    def alive(self) -> bool: ...

    @property
    def returncode(self) -> int | None: ...

    def stop(self, timeout: float | None = None) -> int | None: ...


@dataclass(frozen=True)
class RestartPolicy:
    """When a crashed child is started again (config ``supervisor``). The k-th restart within ``window_s``
    (k = 0, 1, ...) waits ``backoff_s * 2**k``, at most ``backoff_max_s``; a child that has already been
    restarted ``max_restarts`` times within ``window_s`` and dies again is in a crash loop: the stack stops.
    A restart that fails to start counts as one. ``restart=False``: the first crash stops the stack."""

    restart: bool = True
    max_restarts: int = 5
    window_s: float = 300.0
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0

    def delay(self, recent: int) -> float:
        return float(min(self.backoff_max_s, self.backoff_s * 2 ** min(recent, 30)))


@dataclass
class _Watched:
    child: Child
    start: Callable[[], Child]
    restarts: list[float] = field(default_factory=list)  # when each restart was made (clock)
    due: float | None = None  # when the pending restart is to be made; None: running
    last_exit: str = ""


class Supervisor:
    """Watches named children; one that exits is started again (``start``) after the policy's backoff,
    while the others go on serving. ``poll()`` does the work (call it every half second or so); it raises
    ``ProcessDied`` naming the child, its exit and its log file when the child is in a crash loop."""

    def __init__(self, policy: RestartPolicy, clock: Callable[[], float] = time.monotonic,
                 on_restart: Callable[[str, Child], object] | None = None):
        self.policy, self._clock, self._on_restart = policy, clock, on_restart
        self._kids: dict[str, _Watched] = {}

    def watch(self, name: str, child: Child, start: Callable[[], Child]) -> None:
        self._kids[name] = _Watched(child, start)

    def restarts(self, name: str) -> int:
        return len(self._kids[name].restarts)

    def pending(self) -> list[str]:
        """The children waiting to be started again."""
        return [n for n, w in self._kids.items() if w.due is not None]

    def _recent(self, w: _Watched, now: float) -> int:
        return sum(1 for t in w.restarts if now - t < self.policy.window_s)

    def _schedule(self, name: str, w: _Watched, why: str) -> None:
        now = self._clock()
        recent = self._recent(w, now)
        p = self.policy
        if not p.restart or recent >= p.max_restarts:
            loop = (f"{why}; restarted {recent} times in the last {p.window_s:.0f} s (supervisor.max_restarts "
                    f"{p.max_restarts}, supervisor.window_s {p.window_s:.0f}): a crash loop, the stack stops"
                    if p.restart else f"{why} (supervisor.restart is off)")
            raise ProcessDied(name, f"{loop}; see {w.child.log_file}")
        delay = p.delay(recent)
        w.due = now + delay
        log.warning("%s %s; restarting it in %.1f s (restart %d of at most %d in %.0f s; log %s)",
                    name, why, delay, recent + 1, p.max_restarts, p.window_s, w.child.log_file)

    def poll(self) -> None:
        for name, w in self._kids.items():
            if w.due is None:
                if w.child.alive():
                    continue
                w.last_exit = f"exited with code {w.child.returncode}"
                w.child.stop(0)  # what is left of its process group (helpers) goes with it, ports freed
                self._schedule(name, w, w.last_exit)
            if w.due is not None and self._clock() >= w.due:
                w.due = None
                w.restarts.append(self._clock())
                t0 = self._clock()
                try:
                    w.child = w.start()
                except Exception as e:  # noqa: BLE001 - a failed start is one more crash of the same child
                    self._schedule(name, w, f"did not start again ({type(e).__name__}: {str(e)[:300]})")
                    continue
                log.warning("%s restarted in %.1f s (restart %d in the last %.0f s)", name, self._clock() - t0,
                            self._recent(w, self._clock()), self.policy.window_s)
                if self._on_restart is not None:
                    self._on_restart(name, w.child)


def descendants(pid: int) -> list[int]:
    """All live descendant pids of a process (Linux /proc), for checks that nothing is left running."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
        for k in kids:
            out += [k] + descendants(k)
    return out


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue
        if int(pgrp) == pgid and state != "Z":
            out.append(int(stat.parent.name))
    return out


def rss_kb(pid: int) -> int:
    """Resident memory of a process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
