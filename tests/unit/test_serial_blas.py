"""Every server CLI runs numpy's BLAS on the calling thread (mmsearch/runtime/threads.py): checked in a
process of its own, through serve_until_stopped, so this test process keeps its own BLAS threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, os, signal
import numpy
from threadpoolctl import threadpool_info
from mmsearch.cli import serve_until_stopped

before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

def start():
    seen = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    os.kill(os.getpid(), signal.SIGTERM)  # the server stops at once: serve_until_stopped's own stop path
    return seen

serve_until_stopped("probe", start, lambda seen: json.dumps({"before": before, "at_start": seen}), lambda seen: None)
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="OpenBLAS runs one thread on one CPU anyway")
def test_a_server_starts_with_single_threaded_blas() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr
    first, stopped = out.stdout.strip().splitlines()
    seen = json.loads(first)
    assert seen["before"] and seen["before"] == [2] * len(seen["before"])  # numpy's BLAS, as the environment set it
    assert seen["at_start"] == [1] * len(seen["before"])
    assert stopped == "probe stopped"


def test_serial_blas_reports_the_libraries_it_limited() -> None:
    out = subprocess.run([sys.executable, "-c", "import json; from mmsearch.runtime.threads import serial_blas; "
                          "print(json.dumps(serial_blas()))"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    libs = json.loads(out.stdout)
    assert libs and all(lib["num_threads"] == 1 and lib["user_api"] == "blas" for lib in libs)
