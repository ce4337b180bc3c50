"""The JSONL documents reader: every line becomes a Doc, a Reject naming the line and reason, or nothing."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mmsearch.clients.vectors import ID_MAX
from mmsearch.errors import BadInput
from mmsearch.offline.indexing import reader
from mmsearch.offline.indexing.reader import (
    MAX_LINE_BYTES,
    Doc,
    ReaderState,
    Reject,
    count_lines,
    iter_lines,
    parse_line,
    read_image_bytes,
)


def _line(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def _parse(raw: bytes, field: str = "text", state: ReaderState | None = None, n: int = 7):
    return parse_line(n, raw, field, state if state is not None else ReaderState())


# --- good lines -------------------------------------------------------------------------------


def test_good_text_line_becomes_doc_with_every_field_and_mongo_id():
    obj = {"id": "d1", "text": "red running shoes", "price": 12.5, "tags": ["a", "b"], "nested": {"k": 1}}
    d = _parse(_line(obj), n=3)
    assert isinstance(d, Doc)
    assert (d.line, d.id, d.source) == (3, "d1", "red running shoes")
    assert d.doc == {**obj, "_id": "d1"}  # every field of the line goes to MongoDB, keyed by the id
    assert d.payload is None  # loading happens later


def test_image_field_is_the_source_when_asked_for():
    d = _parse(_line({"id": "p1", "image": "imgs/p1.png", "text": "caption"}), field="image")
    assert isinstance(d, Doc) and d.source == "imgs/p1.png"


def test_a_given_underscore_id_is_replaced_by_the_id():
    d = _parse(_line({"id": "real", "_id": "spoofed", "text": "t"}))
    assert isinstance(d, Doc) and d.doc["_id"] == "real" and "spoofed" not in d.doc.values()


def test_non_ascii_text_and_id_survive():
    d = _parse(_line({"id": "café-☕", "text": "日本語のテキスト"}))
    assert isinstance(d, Doc) and d.id == "café-☕" and d.source == "日本語のテキスト"


@pytest.mark.parametrize("raw", [b"", b"   ", b"\t \t", b"\r"])
def test_blank_lines_are_skipped_not_rejected(raw):
    assert _parse(raw) is None


# --- rejects ----------------------------------------------------------------------------------


def test_malformed_json_names_line_column_and_keeps_raw():
    r = _parse(b'{"id": "a", "text": "x"', n=12)
    assert isinstance(r, Reject) and r.line == 12
    assert r.reason.startswith("malformed JSON") and "column" in r.reason
    assert r.raw == '{"id": "a", "text": "x"'


@pytest.mark.parametrize("raw, kind", [(b"[1, 2]", "list"), (b'"just a string"', "str"), (b"42", "int"), (b"null", "NoneType")])
def test_non_object_json_is_rejected_naming_its_type(raw, kind):
    r = _parse(raw)
    assert isinstance(r, Reject) and r.reason == f"expected a JSON object, got {kind}"


@pytest.mark.parametrize("obj", [{"text": "x"}, {"id": "", "text": "x"}, {"id": None, "text": "x"}])
def test_missing_or_empty_id_is_rejected(obj):
    r = _parse(_line(obj))
    assert isinstance(r, Reject) and r.reason == "missing id"


@pytest.mark.parametrize("doc_id, kind", [(5, "int"), (True, "bool"), (["a"], "list"), ({"a": 1}, "dict"), (1.5, "float")])
def test_non_string_id_is_rejected_naming_the_type(doc_id, kind):
    r = _parse(_line({"id": doc_id, "text": "x"}))
    assert isinstance(r, Reject) and r.reason == f"id must be a string, got {kind}"


def test_id_length_limit_is_in_utf8_bytes_not_characters():
    assert isinstance(_parse(_line({"id": "a" * ID_MAX, "text": "x"})), Doc)  # exactly the limit
    assert isinstance(_parse(_line({"id": "a" * (ID_MAX + 1), "text": "x"})), Reject)
    # 2-byte characters: fewer characters than ID_MAX, but more bytes than the vector store's VARCHAR
    n_chars = ID_MAX // 2 + 1
    assert n_chars < ID_MAX
    r = _parse(_line({"id": "é" * n_chars, "text": "x"}))
    assert isinstance(r, Reject) and f"longer than {ID_MAX} bytes" in r.reason


@pytest.mark.parametrize("value", [None, "", "   \n"])
def test_missing_or_blank_source_is_rejected(value):
    obj = {"id": "a"} if value is None else {"id": "a", "text": value}
    r = _parse(_line(obj))
    assert isinstance(r, Reject) and r.reason == "no text"


def test_the_reject_names_the_field_that_was_asked_for():
    r = _parse(_line({"id": "a", "text": "only text here"}), field="image")
    assert isinstance(r, Reject) and r.reason == "no image"


@pytest.mark.parametrize("value, kind", [(3, "int"), (["x"], "list"), ({"u": "x"}, "dict"), (False, "bool")])
def test_non_string_source_is_rejected_naming_the_type(value, kind):
    r = _parse(_line({"id": "a", "text": value}))
    assert isinstance(r, Reject) and r.reason == f"text must be a string, got {kind}"


def test_duplicate_id_names_the_first_line_and_first_wins():
    state = ReaderState()
    first = parse_line(2, _line({"id": "dup", "text": "first"}), "text", state)
    other = parse_line(3, _line({"id": "other", "text": "x"}), "text", state)
    again = parse_line(9, _line({"id": "dup", "text": "second"}), "text", state)
    assert isinstance(first, Doc) and isinstance(other, Doc)
    assert isinstance(again, Reject) and again.line == 9
    assert again.reason == "duplicate id 'dup' (first on line 2)"
    assert state.seen == {"dup": 2, "other": 3}


def test_a_rejected_line_does_not_claim_its_id():
    state = ReaderState()
    bad = parse_line(1, _line({"id": "a"}), "text", state)  # no text: rejected
    good = parse_line(2, _line({"id": "a", "text": "x"}), "text", state)
    assert isinstance(bad, Reject) and isinstance(good, Doc)
    assert state.seen == {"a": 2}


def test_ids_are_case_sensitive_for_duplicates():
    state = ReaderState()
    assert isinstance(parse_line(1, _line({"id": "Abc", "text": "x"}), "text", state), Doc)
    assert isinstance(parse_line(2, _line({"id": "abc", "text": "x"}), "text", state), Doc)


def test_huge_line_is_rejected_by_size_before_decoding():
    # invalid UTF-8 and not JSON either: the size is what must be reported, without decoding 8 MB
    raw = b"\xff" * (MAX_LINE_BYTES + 1)
    r = _parse(raw)
    assert isinstance(r, Reject)
    assert f"{MAX_LINE_BYTES + 1:,} bytes" in r.reason and "limit" in r.reason
    assert r.raw == ""  # the raw line is not copied into the rejects file


def test_line_size_limit_boundary(monkeypatch):
    raw = _line({"id": "a", "text": "x" * 50})
    monkeypatch.setattr(reader, "MAX_LINE_BYTES", len(raw))
    assert isinstance(_parse(raw), Doc)
    monkeypatch.setattr(reader, "MAX_LINE_BYTES", len(raw) - 1)
    r = _parse(raw)
    assert isinstance(r, Reject) and "limit" in r.reason


def test_invalid_utf8_names_the_byte_offset_and_keeps_a_readable_raw():
    raw = b'{"id": "ab\xff", "text": "x"}'
    r = _parse(raw)
    assert isinstance(r, Reject)
    bad_at = raw.index(b"\xff")
    assert r.reason == f"invalid UTF-8 at byte {bad_at}"
    assert r.raw.startswith('{"id": "ab') and "\ufffd" in r.raw
    json.loads(r.as_json())  # still writable to the rejects file


@pytest.mark.parametrize(
    "extra, fragment",
    [({"n": 2**70}, "8-byte ints"), ({"a\u0000b": 1}, "NULL byte")],
)
def test_fields_mongodb_cannot_store_are_rejected_and_do_not_claim_the_id(extra, fragment):
    state = ReaderState()
    r = parse_line(4, _line({"id": "a", "text": "x", **extra}), "text", state)
    assert isinstance(r, Reject) and r.reason.startswith("not storable in MongoDB") and fragment in r.reason
    assert "a" not in state.seen


def test_reject_as_json_is_one_line_truncates_raw_and_keeps_unicode():
    r = Reject(5, "malformed JSON: x", "é" * 5000)
    s = r.as_json()
    assert "\n" not in s and "é" in s  # ensure_ascii=False: readable
    back = json.loads(s)
    assert back["line"] == 5 and back["reason"] == "malformed JSON: x" and back["raw"] == "é" * 2000


# --- files ------------------------------------------------------------------------------------


def test_iter_lines_numbers_from_one_strips_newlines_and_keeps_blank_lines(tmp_path: Path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b"a\r\n\nb\nlast-without-newline")
    assert list(iter_lines(p)) == [(1, b"a"), (2, b""), (3, b"b"), (4, b"last-without-newline")]


def test_iter_lines_resumes_after_a_checkpoint(tmp_path: Path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b"".join(f"l{i}\n".encode() for i in range(1, 6)))
    assert list(iter_lines(p, start_line=3)) == [(4, b"l4"), (5, b"l5")]
    assert list(iter_lines(p, start_line=5)) == []


def test_iter_lines_does_not_split_on_unicode_line_separators(tmp_path: Path):
    # U+2028 / U+0085 are legal raw inside JSON strings; only \n ends a JSON Lines record
    p = tmp_path / "d.jsonl"
    p.write_bytes(_line({"id": "a", "text": "x\u2028y\u0085z"}) + b"\n")
    lines = list(iter_lines(p))
    assert len(lines) == 1
    d = parse_line(*lines[0], "text", ReaderState())
    assert isinstance(d, Doc) and d.source == "x\u2028y\u0085z"


def test_count_lines_counts_newlines(tmp_path: Path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b"a\nb\n\nc\n")
    assert count_lines(p) == 4
    p.write_bytes(b"")
    assert count_lines(p) == 0


def test_mixed_file_reports_each_bad_line_by_its_number(tmp_path: Path):
    rows = [
        _line({"id": "1", "text": "ok one"}),        # 1
        b"",                                         # 2 blank
        b"{not json",                                # 3
        _line({"id": "2"}),                          # 4 no text
        _line({"id": "1", "text": "dup"}),           # 5 duplicate of line 1
        b"\xfe\xff",                                 # 6 bad UTF-8
        _line({"id": "3", "text": "ok three"}),      # 7
    ]
    p = tmp_path / "docs.jsonl"
    p.write_bytes(b"\n".join(rows) + b"\n")
    state = ReaderState()
    out = [parse_line(n, raw, "text", state) for n, raw in iter_lines(p)]
    docs = [d for d in out if isinstance(d, Doc)]
    rejects = {r.line: r.reason for r in out if isinstance(r, Reject)}
    assert [(d.line, d.id) for d in docs] == [(1, "1"), (7, "3")]
    assert sorted(rejects) == [3, 4, 5, 6]
    assert rejects[3].startswith("malformed JSON")
    assert rejects[4] == "no text"
    assert "first on line 1" in rejects[5]
    assert rejects[6].startswith("invalid UTF-8")
    assert out[1] is None


# --- images -----------------------------------------------------------------------------------


@pytest.fixture()
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.png").write_bytes(b"inside-a")
    (root / "sub" / "b.png").write_bytes(b"inside-b")
    (tmp_path / "secret.png").write_bytes(b"outside-secret")
    return root


@pytest.mark.parametrize("ref, data", [("a.png", b"inside-a"), ("sub/b.png", b"inside-b"), ("sub/../a.png", b"inside-a"),
                                       ("./sub/b.png", b"inside-b")])
def test_images_under_the_root_are_read(image_root, ref, data):
    assert read_image_bytes(ref, image_root) == data


@pytest.mark.parametrize("ref", ["../secret.png", "sub/../../secret.png", "ABSOLUTE"])
def test_paths_escaping_the_root_are_refused(image_root, ref):
    if ref == "ABSOLUTE":
        ref = str(image_root.parent / "secret.png")
    with pytest.raises(BadInput, match="escapes --image-root"):
        read_image_bytes(ref, image_root)


def test_a_symlink_inside_the_root_pointing_outside_is_refused(image_root):
    (image_root / "link.png").symlink_to(image_root.parent / "secret.png")
    with pytest.raises(BadInput, match="escapes"):
        read_image_bytes("link.png", image_root)


@pytest.mark.parametrize("ref", ["file:///etc/passwd", "ftp://example.com/a.png", "s3://bucket/a.png"])
def test_other_url_schemes_are_refused(image_root, ref):
    with pytest.raises(BadInput, match="only relative paths and http"):
        read_image_bytes(ref, image_root)


def test_missing_image_and_folder_are_named(image_root):
    with pytest.raises(BadInput, match="image not found: nope.png"):
        read_image_bytes("nope.png", image_root)
    with pytest.raises(BadInput, match="sub is a folder"):
        read_image_bytes("sub", image_root)


def test_local_image_size_limit(image_root, monkeypatch):
    monkeypatch.setattr(reader, "MAX_IMAGE_BYTES", len(b"inside-a"))
    assert read_image_bytes("a.png", image_root) == b"inside-a"
    monkeypatch.setattr(reader, "MAX_IMAGE_BYTES", len(b"inside-a") - 1)
    with pytest.raises(BadInput, match="over the"):
        read_image_bytes("a.png", image_root)


@pytest.fixture()
def http_images():
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            if self.path == "/img.png":
                body = b"remote-image-bytes"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_http_image_is_fetched_and_errors_are_bad_input(http_images, tmp_path, monkeypatch):
    assert read_image_bytes(f"{http_images}/img.png", tmp_path) == b"remote-image-bytes"
    with pytest.raises(BadInput, match="cannot fetch image"):
        read_image_bytes(f"{http_images}/missing.png", tmp_path)
    monkeypatch.setattr(reader, "MAX_IMAGE_BYTES", 5)
    with pytest.raises(BadInput, match="over the 5-byte limit"):
        read_image_bytes(f"{http_images}/img.png", tmp_path)
