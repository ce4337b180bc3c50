"""SVG images, rasterised safely (resvg, no system libraries) wherever an image is read.

SVG is XML that can reference other files and declare entities, so a document is checked before
it is rendered: size capped, no external or nested entities (entity-expansion bombs), at most
MAX_ELEMENTS elements, and every ``href`` either a fragment (``#id``) or an inline ``data:image``;
a plain file name beside a trusted file (a stamp's bitmap) only when the caller names the folder.
Rendering fits the drawing into a fixed box, so a declared 100k x 100k canvas costs what a
small one does. Index builds, the preprocess service and the web page all call ``rasterise``.

**Rendered at the size the model takes.** A caller that knows the shortest edge its model resizes to
(``short_edge``: the manifest's ``resize_shortest_edge``) gets a render whose short edge is that size,
not one fitted into the 512-pixel box to be shrunk again: resvg's time grows with the pixels it fills
(bench/svg_render.py), and the pixels the model sees are an antialiased drawing at its own resolution
either way. The size comes from the root's declared
``width``/``height`` (absolute lengths) or else its ``viewBox``; a render that still comes out
smaller (an aspect the declaration did not tell) is made again in the full box. Builds, the documents
API and the preprocess service pass their model's edge, so a document and a query are encoded from
the same pixels; the web page, which shows the picture, renders in the full box.
"""

from __future__ import annotations

import functools
import math
import re
import xml.parsers.expat
from pathlib import Path

from mmsearch.errors import BadInput, Internal

MAX_SVG_BYTES = 4 * 1024 * 1024
MAX_ELEMENTS = 100_000
MAX_ENTITIES = 32  # Adobe Illustrator files declare a few namespace entities; bombs declare nested ones
MAX_ENTITY_CHARS = 512
RENDER_BOX = 512  # pixels: the drawing is fitted into a box this size (models take 224-384)
# how an SVG becomes pixels; bumped when that changes, so what was computed from older renders (the training
# feature cache, offline/training/feature_cache.py) is computed again (2: rendered at the model's short edge)
RENDER_VERSION = 2
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|gif|webp)[;,]", re.I)
_DECLARED_ENCODING = re.compile(rb"""<\?xml[^>]*?encoding=["']([A-Za-z0-9._-]{1,40})["']""")
_HREF_ATTRS = ("href", "xlink:href", "http://www.w3.org/1999/xlink href")


def is_svg(data: bytes) -> bool:
    """Sniffed from the first bytes: an XML declaration, comment or doctype followed by an <svg element."""
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<svg", b"<?xml", b"<!--", b"<!doctype svg")) and b"<svg" in head


def check_svg(data: bytes, name: str = "image", resources_dir: Path | None = None) -> float | None:
    """Refuse what rendering must not meet, naming the problem (BadInput); the drawing's declared
    width / height (None when the root does not say)."""
    if len(data) > MAX_SVG_BYTES:
        raise BadInput(f"{name}: SVG is {len(data):,} bytes, over the {MAX_SVG_BYTES:,}-byte limit")
    c = _Checker(name, resources_dir)
    p = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    p.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    p.EntityDeclHandler = c.entity
    p.StartElementHandler = c.start
    p.ExternalEntityRefHandler = lambda *a: 0  # never load an external DTD or entity (0: an error)
    try:
        p.Parse(data, True)
    except xml.parsers.expat.ExpatError as e:
        raise BadInput(f"{name}: malformed SVG ({xml.parsers.expat.errors.messages.get(e.code, e)} at line {e.lineno})") from e
    except LookupError as e:  # expat asks Python for the declared encoding's codec
        raise BadInput(f"{name}: SVG declares an unknown encoding ({e})") from e
    if c.root is None:
        raise BadInput(f"{name}: empty SVG document")
    return c.aspect


class _Checker:
    def __init__(self, name: str, resources_dir: Path | None):
        self.name, self.resources_dir = name, resources_dir
        self.elements = self.entities = 0
        self.root: str | None = None
        self.aspect: float | None = None

    def entity(self, ent: str, is_param: int, value: str | None, base: str | None, system_id: str | None, *_: object) -> None:
        self.entities += 1
        if value is None or system_id is not None or is_param:
            raise BadInput(f"{self.name}: SVG declares an external or parameter entity {ent!r} (not followed)")
        if "&" in value or "<" in value or len(value) > MAX_ENTITY_CHARS or self.entities > MAX_ENTITIES:
            raise BadInput(f"{self.name}: SVG entity {ent!r} is nested, too long or one too many (entity expansion refused)")

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self.elements += 1
        if self.root is None:
            self.root = tag
            if tag.rsplit(" ", 1)[-1].rsplit(":", 1)[-1] != "svg":
                raise BadInput(f"{self.name}: not an SVG document (root element {tag!r})")
            self.aspect = declared_aspect(attrs)
        if self.elements > MAX_ELEMENTS:
            raise BadInput(f"{self.name}: SVG has over {MAX_ELEMENTS:,} elements")
        for key in _HREF_ATTRS:
            ref = attrs.get(key)
            if ref is not None:
                _check_href(ref.strip(), self.name, self.resources_dir)


_LENGTH = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(px|pt|pc|mm|cm|in)?\s*$")
_UNIT_PX = {None: 1.0, "px": 1.0, "pt": 4 / 3, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0}


def declared_aspect(attrs: dict[str, str]) -> float | None:
    """Width / height of the root <svg> as resvg sizes it: its width and height when both are absolute
    lengths, else its viewBox; None when neither says (a percentage, a missing or degenerate box)."""
    w, h = (_LENGTH.match(attrs.get(k, "")) for k in ("width", "height"))
    if w and h:
        return _ratio(float(w.group(1)) * _UNIT_PX[w.group(2)], float(h.group(1)) * _UNIT_PX[h.group(2)])
    box = attrs.get("viewBox", "").replace(",", " ").split()
    try:
        return _ratio(float(box[2]), float(box[3]))
    except (IndexError, ValueError):
        return None


def _ratio(w: float, h: float) -> float | None:
    """w / h when it is a usable aspect (finite and above 0 both ways: 1e400, inf, nan, 1e-200 / 1e200 are not)."""
    if not (math.isfinite(w) and math.isfinite(h)) or w <= 0 or h <= 0:
        return None
    r = w / h
    return r if math.isfinite(r) and r > 0 and math.isfinite(1 / r) else None


def render_box(aspect: float | None, short_edge: int | None, box: int = RENDER_BOX) -> int:
    """The square a drawing is fitted into so that its short edge comes out at ``short_edge`` (never
    over ``box``, the most any render gets): ``box`` when either is unknown."""
    if short_edge is None or aspect is None:
        return box
    return min(box, max(short_edge, math.ceil(short_edge * max(aspect, 1 / aspect) - 1e-6)))


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (no decode)."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _check_href(ref: str, name: str, resources_dir: Path | None) -> None:
    if not ref or ref.startswith("#") or _DATA_IMAGE.match(ref):
        return
    if resources_dir is not None and re.fullmatch(r"[A-Za-z0-9_.-]{1,255}", ref) and ".." not in ref:
        return  # a file beside a trusted local SVG (rendered if present, skipped by resvg if not)
    raise BadInput(f"{name}: SVG references {ref[:80]!r}: external references are not followed")


def rasterise(data: bytes, name: str = "image", box: int = RENDER_BOX, resources_dir: Path | None = None,
              short_edge: int | None = None) -> bytes:
    """PNG bytes (RGBA, transparent background like the stamps' PNGs) of a checked SVG fitted into ``box``,
    or, given ``short_edge``, a smaller square that still gives the render that short edge (module doc).

    The render runs in a child process with CPU, memory and wall-clock limits: a tiny SVG can still
    cost minutes (large blur and morphology filters, nested <use> fan-out) or gigabytes (a huge
    embedded bitmap), and resvg holds the GIL while it renders, so in-process it would stall every
    thread of the service. A child that overruns is killed and the SVG refused; ours never sees it."""
    aspect = check_svg(data, name, resources_dir)
    declared = _DECLARED_ENCODING.match(data.lstrip(b"\xef\xbb\xbf \t\r\n"))
    codec = declared.group(1).decode("ascii") if declared else "utf-8"
    try:
        text = data.decode(codec)
    except LookupError as e:
        raise BadInput(f"{name}: SVG declares an unknown encoding {codec!r}") from e
    except UnicodeDecodeError as e:
        raise BadInput(f"{name}: SVG is not valid {codec} text (byte {e.start})") from e
    fit = render_box(aspect, short_edge, box)
    status, payload = _render_in_child(text, fit, resources_dir)
    if status == b"ok" and short_edge is not None and fit < box and min(png_size(payload)) < short_edge - 1:
        status, payload = _render_in_child(text, box, resources_dir)  # the declared size misled us: the full box
        # (a pixel short is the fit's rounding, not a misleading size: not worth a second render)
    if status == b"ok":
        return payload
    if status == b"limit":
        raise BadInput(f"{name}: SVG rendering exceeded its limits ({payload.decode(errors='replace')})")
    raise BadInput(f"{name}: SVG cannot be rendered ({payload.decode(errors='replace')})")


RENDER_TIMEOUT_S = 10.0
RENDER_CPU_S = 10
RENDER_EXTRA_MEMORY = 1024 * 1024 * 1024  # address space the renderer may add to what it has at start


def _render_in_child(text: str, box: int, resources_dir: Path | None) -> tuple[bytes, bytes]:
    """(b"ok", png) | (b"error" | b"limit", message). The renderer is a new process
    (mmsearch/modelrepo/svg_renderer.py), started by subprocess's vfork+exec: a bare os.fork() of a gRPC server
    ran gRPC's fork handlers, and about one SVG query in six died in the child (SIGSEGV) under load in
    the served stack. The child sets its own limits."""
    import subprocess

    cmd = [*_renderer_command(), str(box), str(RENDER_CPU_S), str(RENDER_EXTRA_MEMORY),
           str(resources_dir) if resources_dir is not None else ""]
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates, from a declared encoding such as raw_unicode_escape
        return b"error", f"text cannot be encoded ({e.reason})".encode()
    try:
        done = subprocess.run(cmd, input=data, capture_output=True, timeout=RENDER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:  # run() has killed it
        return b"limit", f"no result within {RENDER_TIMEOUT_S:.0f} s".encode()
    except OSError as e:
        raise Internal(f"SVG renderer did not start: {e}") from e
    if done.returncode < 0:  # killed: a limit (SIGKILL/SIGXCPU) or an abort (allocation failure)
        return b"limit", f"renderer stopped: signal {-done.returncode}".encode()
    head, sep, payload = done.stdout.partition(b"\n")
    if done.returncode != 0 or not sep:  # our renderer is broken (not the SVG's fault): say so, not 400
        tail = done.stderr.decode(errors="replace").strip()[-500:]
        raise Internal(f"SVG renderer failed (exit {done.returncode}): {tail}")
    return head, payload


@functools.cache
def _renderer_command() -> tuple[str, ...]:
    """``python -I -S svg_renderer.py SITE_DIR``: resvg_py's folder found once, not per render."""
    import sys

    import resvg_py

    site_dir = str(Path(next(iter(resvg_py.__path__))).parent)
    return (sys.executable, "-I", "-S", str(Path(__file__).with_name("svg_renderer.py")), site_dir)
