"""ChildProcess: the one way the project starts, awaits, watches and stops a server process."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from mmsearch.errors import ProcessDied, Unavailable
from mmsearch.runtime.supervisor import ChildProcess, _setpriv, descendants, rss_kb

PY = sys.executable


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_waits_for_readiness_then_stops_the_whole_group(tmp_path):
    flag = tmp_path / "ready"
    # the child starts a grandchild, then says it is ready
    code = ("import subprocess, sys, time, pathlib; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            f"time.sleep(0.3); pathlib.Path({str(flag)!r}).touch(); time.sleep(60)")
    child = ChildProcess("sleeper", [PY, "-c", code], tmp_path / "log.txt", flag.exists, startup_timeout_s=20)
    assert child.ready() and child.alive()
    grandchildren = descendants(child.pid)
    assert grandchildren, "the grandchild should be running"
    assert rss_kb(child.pid) > 0
    child.stop(timeout=5)
    assert not child.alive()
    assert all(not _alive(p) for p in grandchildren), "nothing of the group may outlive stop()"


def test_a_child_that_exits_at_start_is_process_died_with_its_log(tmp_path):
    with pytest.raises(ProcessDied, match="code 3") as info:
        ChildProcess("crasher", [PY, "-c", "import sys; print('bad flag --x'); sys.exit(3)"], tmp_path / "log.txt",
                     lambda: False, startup_timeout_s=20)
    assert info.value.dependency == "crasher" and "bad flag --x" in info.value.message


def test_a_child_never_ready_is_unavailable_and_stopped(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(Unavailable, match="not ready after") as info:
        ChildProcess("slow", [PY, "-c", "import time; time.sleep(60)"], tmp_path / "log.txt", lambda: False, startup_timeout_s=0.5)
    assert not isinstance(info.value, ProcessDied)
    assert time.monotonic() - t0 < 10


def test_check_reports_a_child_that_died_later(tmp_path):
    child = ChildProcess("worker", [PY, "-c", "import time; time.sleep(60)"], tmp_path / "log.txt", lambda: True)
    child.check()  # alive: no error
    os.killpg(child.pid, 9)
    child.proc.wait(5)
    with pytest.raises(ProcessDied, match=r"worker unavailable: exited with code -9; see .*log\.txt"):
        child.check()
    child.stop()


def test_sigterm_ignored_falls_back_to_sigkill(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    with ChildProcess("stubborn", [PY, "-c", code], tmp_path / "log.txt", lambda: True) as child:
        time.sleep(0.3)  # let it install the handler
        t0 = time.monotonic()
        assert child.stop(timeout=0.5) == -9
        assert time.monotonic() - t0 < 5


# ----------------------------------------------------------------------- ports taken between choosing and binding
BINDS = "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(60)"


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def test_a_port_taken_meanwhile_is_retried_on_fresh_ports(tmp_path):
    import socket

    from mmsearch.runtime.net import free_port
    from mmsearch.runtime.supervisor import retry_port_clash

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # bound, not listening: the child's bind fails, and nothing answers its probe
    taken = holder.getsockname()[1]
    tried: list[int] = []

    def start() -> ChildProcess:
        port = taken if not tried else free_port()  # the first pick was bound by someone else meanwhile
        tried.append(port)
        return ChildProcess("binder", [PY, "-c", BINDS, str(port)], tmp_path / "binder.log", lambda: _listening(port), 10)

    try:
        child = retry_port_clash(start)
        try:
            assert tried[0] == taken and len(tried) == 2 and child.alive()
        finally:
            child.stop()
        # a port the user configured is not retried: the clash is reported as it is
        tried.clear()
        with pytest.raises(ProcessDied, match="Address already in use"):
            retry_port_clash(start, retry=False)
        assert tried == [taken]
    finally:
        holder.close()


def test_other_failures_are_not_retried(tmp_path):
    from mmsearch.runtime.supervisor import retry_port_clash

    calls = []

    def start() -> ChildProcess:
        calls.append(1)
        return ChildProcess("crash", [PY, "-c", "raise SystemExit('bad config')"], tmp_path / "crash.log", lambda: False, 10)

    with pytest.raises(ProcessDied, match="bad config"):
        retry_port_clash(start)
    assert len(calls) == 1


def test_a_failed_start_reports_its_own_log_lines_not_an_earlier_run_s(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("Address already in use (an earlier run)\n")
    with pytest.raises(ProcessDied) as e:
        ChildProcess("x", [PY, "-c", "print('bad config'); raise SystemExit(2)"], log, lambda: False, 10)
    assert "bad config" in e.value.message and "earlier run" not in e.value.message


@pytest.mark.skipif(_setpriv() is None, reason="no setpriv with --pdeathsig on this host")
def test_a_child_gets_sigterm_when_its_launcher_is_killed(tmp_path):
    """PR_SET_PDEATHSIG (set by ``setpriv`` before exec, not by a preexec_fn: see die_with_parent)."""
    import subprocess

    from mmsearch.runtime.net import wait_until

    pid_file = tmp_path / "child.pid"
    launcher = (f"import sys, time; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
                "from pathlib import Path\nfrom mmsearch.runtime.supervisor import ChildProcess\n"
                f"c = ChildProcess('sleeper', [sys.executable, '-c', 'import time; time.sleep(60)'], Path({str(tmp_path / 'log.txt')!r}), lambda: True)\n"
                f"Path({str(pid_file)!r}).write_text(str(c.pid))\ntime.sleep(60)\n")
    proc = subprocess.Popen([PY, "-c", launcher])
    try:
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", 20)
        child = int(pid_file.read_text())
        assert _alive(child)
        proc.kill()
        proc.wait(10)
        assert wait_until(lambda: not _alive(child), 10), "the child outlived its killed launcher"
    finally:
        proc.kill()
        if pid_file.exists() and pid_file.read_text():
            try:
                os.kill(int(pid_file.read_text()), 9)
            except ProcessLookupError:
                pass


# --------------------------------------------------------------------------- restarts (Supervisor, RestartPolicy)
class FakeChild:
    """A child that is alive until crash() (exit code -9 by default)."""

    def __init__(self, name: str, log_file: Path = Path("/logs/x.log")):
        self.name, self.log_file, self.code, self.stopped = name, log_file, None, False

    def alive(self) -> bool:
        return self.code is None

    @property
    def returncode(self):
        return self.code

    def crash(self, code: int = -9) -> None:
        self.code = code

    def stop(self, timeout=None):
        self.stopped = True
        return self.code


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _supervised(policy, *names, fail_starts: int = 0):
    from mmsearch.runtime.supervisor import Supervisor

    clock, started, restarted = Clock(), {n: [] for n in names}, []
    fails = {"left": fail_starts}
    sup = Supervisor(policy, clock=clock, on_restart=lambda n, c: restarted.append(n))

    def starter(name):
        def start():
            if fails["left"]:
                fails["left"] -= 1
                raise ProcessDied(name, "exited with code 1 at start")
            c = FakeChild(name, Path(f"/logs/{name}.log"))
            started[name].append(c)
            return c
        return start

    kids = {}
    for n in names:
        kids[n] = FakeChild(n, Path(f"/logs/{n}.log"))
        sup.watch(n, kids[n], starter(n))
    return sup, clock, kids, started, restarted


def test_a_crashed_child_is_restarted_after_the_backoff_while_the_others_run():
    from mmsearch.runtime.supervisor import RestartPolicy

    sup, clock, kids, started, restarted = _supervised(RestartPolicy(backoff_s=0.5), "milvus", "web")
    sup.poll()
    assert not started["milvus"] and not sup.pending()
    kids["milvus"].crash()
    sup.poll()
    assert kids["milvus"].stopped and sup.pending() == ["milvus"] and not started["milvus"]  # its group cleaned, waiting
    clock.t += 0.4
    sup.poll()
    assert not started["milvus"]
    clock.t += 0.1
    sup.poll()
    assert len(started["milvus"]) == 1 and restarted == ["milvus"] and not sup.pending()
    assert not started["web"] and not kids["web"].stopped  # the rest was left alone
    sup.poll()
    assert len(started["milvus"]) == 1  # the new one is alive: nothing more to do


def test_backoff_doubles_within_the_window_up_to_its_cap_and_resets_after_it():
    from mmsearch.runtime.supervisor import RestartPolicy

    p = RestartPolicy(max_restarts=100, window_s=60, backoff_s=0.5, backoff_max_s=3)
    assert [p.delay(k) for k in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    sup, clock, kids, started, _ = _supervised(p, "triton")
    waits = []
    for _ in range(4):
        (started["triton"][-1] if started["triton"] else kids["triton"]).crash()
        sup.poll()
        t0 = clock.t
        while not sup.poll() and sup.pending():
            clock.t += 0.05
        waits.append(round(clock.t - t0, 1))
    assert waits == [0.5, 1.0, 2.0, 3.0]
    clock.t += 61  # a child that stayed up longer than the window starts over at the first backoff
    started["triton"][-1].crash()
    sup.poll()
    clock.t += 0.5
    sup.poll()
    assert len(started["triton"]) == 5


def test_a_crash_loop_stops_naming_the_child_and_its_log():
    from mmsearch.runtime.supervisor import RestartPolicy

    sup, clock, kids, started, _ = _supervised(RestartPolicy(max_restarts=3, window_s=60, backoff_s=0), "preprocess", "web")
    current = kids["preprocess"]
    for _ in range(3):
        current.crash(1)
        sup.poll()
        sup.poll()
        current = started["preprocess"][-1]
        clock.t += 5
    current.crash(1)
    with pytest.raises(ProcessDied) as e:
        sup.poll()
    msg = str(e.value)
    assert e.value.dependency == "preprocess" and "exited with code 1" in msg and "/logs/preprocess.log" in msg
    assert "crash loop" in msg and "supervisor.max_restarts 3" in msg


def test_crashes_spread_wider_than_the_window_are_no_loop():
    from mmsearch.runtime.supervisor import RestartPolicy

    sup, clock, kids, started, _ = _supervised(RestartPolicy(max_restarts=2, window_s=10, backoff_s=0), "mongo")
    current = kids["mongo"]
    for _ in range(6):
        current.crash()
        sup.poll()
        sup.poll()
        current = started["mongo"][-1]
        clock.t += 6  # two restarts in any 10 s: never a third
    assert len(started["mongo"]) == 6


def test_a_failed_restart_counts_and_is_tried_again_with_more_backoff():
    from mmsearch.runtime.supervisor import RestartPolicy

    sup, clock, kids, started, _ = _supervised(RestartPolicy(max_restarts=5, backoff_s=1), "retrieval", fail_starts=2)
    kids["retrieval"].crash()
    sup.poll()
    clock.t += 1
    sup.poll()  # first try fails: next in 2 s
    assert not started["retrieval"] and sup.pending() == ["retrieval"]
    clock.t += 1.9
    sup.poll()
    assert not started["retrieval"]
    clock.t += 0.1
    sup.poll()  # second fails: next in 4 s
    clock.t += 4
    sup.poll()
    assert len(started["retrieval"]) == 1 and sup.restarts("retrieval") == 3


def test_failed_restarts_alone_make_a_crash_loop():
    from mmsearch.runtime.supervisor import RestartPolicy

    sup, _, kids, _, _ = _supervised(RestartPolicy(max_restarts=2, backoff_s=0), "triton", fail_starts=10)
    kids["triton"].crash()
    sup.poll()  # seen dead, restarted at once (no backoff here): restart 1 fails
    with pytest.raises(ProcessDied, match="did not start again.*crash loop.*triton.log"):
        sup.poll()  # restart 2 fails: no more


def test_restart_off_stops_at_the_first_crash():
    from mmsearch.runtime.supervisor import RestartPolicy

    sup, _, kids, started, _ = _supervised(RestartPolicy(restart=False), "milvus")
    kids["milvus"].crash()
    with pytest.raises(ProcessDied, match=r"milvus unavailable: exited with code -9 \(supervisor.restart is off\); see /logs/milvus.log"):
        sup.poll()
    assert not started["milvus"]


def test_up_builds_its_policy_from_config():
    from mmsearch.config import load_config
    from mmsearch.launcher.up import restart_policy

    cfg = load_config(environ={"MMSEARCH_SUPERVISOR_MAX_RESTARTS": "2", "MMSEARCH_SUPERVISOR_WINDOW_S": "30"})
    p = restart_policy(cfg)
    assert (p.restart, p.max_restarts, p.window_s, p.backoff_s, p.backoff_max_s) == (True, 2, 30.0, 0.5, 30.0)
