"""The SVG renderer process (run by mmsearch.modelrepo.svg, never imported): SVG text on stdin, ``status\\n`` +
payload on stdout, with CPU and memory limits it sets on itself.

Started as ``python -I -S svg_renderer.py SITE_DIR BOX CPU_S EXTRA_BYTES RESOURCES_DIR``: isolated,
without site processing, importing resvg_py from SITE_DIR and nothing of mmsearch, so it starts in
about 9 ms (``python -m`` of a module of ours took 88 ms).
"""

import faulthandler
import os
import resource
import sys


def main(argv: list[str]) -> int:
    site_dir, box, cpu_s, extra, resources = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), argv[4] or None
    faulthandler.disable()  # an abort here is an expected refusal, not a crash report for the log
    sys.path.append(site_dir)
    import resvg_py

    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra, vm + extra))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    text = sys.stdin.buffer.read().decode("utf-8")
    try:
        png = resvg_py.svg_to_bytes(svg_string=text, width=box, height=box, dpi=96.0, resources_dir=resources)
        out = b"ok\n" + bytes(png)
    except MemoryError:
        out = b"limit\nover the memory limit"
    except BaseException as e:  # noqa: BLE001 - pyo3 panics are BaseExceptions; all become a refusal
        out = b"error\n" + str(e).encode()[:500]
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
