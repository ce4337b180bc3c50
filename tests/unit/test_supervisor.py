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
