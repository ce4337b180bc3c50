"""What an SVG costs to render, in the full box against the short edge a model resizes to: every SVG
stamp of the demo's Tux Paint set rendered through `modelrepo.svg.rasterise` (the sandboxed renderer
process, as builds and the preprocess service run it), the sizes interleaved round by round.

    .venv/bin/python bench/svg_render.py [--rounds 2] [--edges 256,224]

Uses the demo's stamps (`make demo` prepares them; fetched from Debian if they are missing). Reports per SVG: wall ms and the renderer process's
CPU ms (children's CPU time), and how many renders came out with the model's short edge. Writes a JSON
result (command, commit, machine, date, data) and prints one line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results_io import write_result


def stamps_root() -> Path:
    """The demo's stamps, where `make demo` unpacked them (fetched from Debian first if they are not there)."""
    from mmsearch.config import load_config
    from mmsearch.offline.datasets import stamps

    return stamps.root(Path(load_config().data_dir) / "data")


def render_all(svgs: list[tuple[bytes, Path]], edge: int | None) -> dict[str, float]:
    from mmsearch.modelrepo.svg import png_size, rasterise

    c0, t0, at_edge = os.times(), time.perf_counter(), 0
    for data, folder in svgs:
        w, h = png_size(rasterise(data, "stamp", resources_dir=folder, short_edge=edge))
        at_edge += edge is not None and min(w, h) >= edge - 1
    c1 = os.times()
    n = len(svgs)
    return {"wall_ms": (time.perf_counter() - t0) / n * 1000,
            "renderer_cpu_ms": (c1.children_user + c1.children_system - c0.children_user - c0.children_system) / n * 1000,
            "at_model_edge": at_edge}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--edges", default="256,224", help="model short edges to compare with the full box")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    try:
        edges = [int(e) for e in args.edges.split(",") if e.strip()]
    except ValueError:
        ap.error(f"--edges: {args.edges!r}: whole numbers, comma-separated")
    if args.rounds < 1 or not edges or min(edges) < 1:
        ap.error("--rounds and every edge must be at least 1")
    root = stamps_root()
    svgs = [(p.read_bytes(), p.parent) for p in sorted(root.rglob("*.svg"))]
    if not svgs:
        raise SystemExit(f"no SVG under {root}")
    runs: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.rounds):  # interleaved: the machine's drift hits every size alike
        for edge in (None, *edges):
            runs.setdefault("full box" if edge is None else f"edge {edge}", []).append(render_all(svgs, edge))
    best = {k: min(v, key=lambda r: r["renderer_cpu_ms"]) for k, v in runs.items()}
    full = best["full box"]["renderer_cpu_ms"]
    parts = [f"{k} {v['wall_ms']:.1f} ms wall / {v['renderer_cpu_ms']:.1f} ms CPU"
             + (f" ({full / v['renderer_cpu_ms']:.2f}x less CPU, {int(v['at_model_edge'])} at the edge)" if k != "full box" else "")
             for k, v in best.items()]
    summary = f"svg_render: {len(svgs)} Tux Paint SVG stamps, per SVG (best of {args.rounds}): " + "; ".join(parts)
    data = {"description": f"the {len(svgs)} SVG stamps of Debian's tuxpaint-stamps-default (the demo's images)", "synthetic": False}
    write_result("svg_render", "SVG render cost: full box against the model's edge", summary, data,
                 {"svgs": len(svgs), "rounds": runs, "best": best},
                 argv=["bench/svg_render.py", *(sys.argv[1:] if argv is None else argv)], out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
