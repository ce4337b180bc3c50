"""The scale corpus's parsers and rules on small inline samples (no packages fetched)."""

from __future__ import annotations

import gzip
import json

from mmsearch.offline.datasets import scale_corpus as S


def test_split_long_cuts_at_sentences_within_the_limit():
    text = " ".join(f"Sentence number {i} says something plain." for i in range(60))
    pieces = S.split_long(text, 200)
    assert all(len(p) <= 200 for p in pieces) and len(pieces) > 5
    assert all(p.endswith(".") for p in pieces)
    assert " ".join(pieces) == text
    assert S.split_long("short", 200) == ["short"]
    word_soup = "x" * 450  # no sentence or word boundary: cut anyway
    assert [len(p) for p in S.split_long(word_soup, 200)] == [200, 200, 50]


def test_rst_paragraphs_skip_code_directives_and_tables():
    doc = """Title
=====

A first paragraph with ``code`` and a :ref:`link <target>` in it.

.. note::

   An admonition body, left out.

Example::

    literal code, left out

* an item of a list
* another item

+-----+-----+
| a   | b   |
+-----+-----+

Last words of the section.
"""
    got = list(S.rst_paragraphs(doc))
    assert got[0] == ("Title", "A first paragraph with code and a link in it.")
    texts = [p for _, p in got]
    assert "Example:" in texts and "an item of a list" in texts and "another item" in texts
    assert "Last words of the section." in texts
    assert not any("literal code" in t or "admonition" in t or "| a" in t for t in texts)


def test_roff_paragraphs_keep_words_and_drop_requests():
    page = r""".TH LS 1
.SH NAME
ls \- list directory contents
.SH DESCRIPTION
List information about the
.B FILE
(the current directory by default).
.PP
Sort entries \fIalphabetically\fR if none of \-cftuvSUX nor \fB\-\-sort\fP is specified.
.nf
code block line
.fi
"""
    got = list(S.roff_paragraphs(page))
    assert ("DESCRIPTION", "List information about the FILE (the current directory by default).") in got
    assert ("DESCRIPTION", "Sort entries alphabetically if none of -cftuvSUX nor --sort is specified.") in got
    assert not any("code block" in p for _, p in got)


def test_pod_paragraphs_resolve_formatting_codes():
    pod = """=head1 NAME

perlfoo - things

=head2 Usage

Call B<foo()> with C<< $x->bar >> and see L<perlfunc/open> or L<the docs|perldoc>E<gt>.

    verbatim code, left out

=begin html

<p>left out</p>

=end html
"""
    got = list(S.pod_paragraphs(pod))
    assert ("Usage", "Call foo() with $x->bar and see open or the docs>.") in got
    assert not any("verbatim" in p or "left out" in p for _, p in got)


def test_dictd_entries_and_texts(tmp_path):
    body = "Abandon \\A*ban\"don\\, v. t.\n   1. To give up wholly.\n      [1913 Webster]\n\n   2. To desert.\n\n   Syn: leave\n"
    head = "zebra\n"
    data = (body + head).encode()
    with gzip.open(tmp_path / "d.dict.dz", "wb") as f:
        f.write(data)
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def enc(n: int) -> str:
        return b64[n // 64] + b64[n % 64] if n >= 64 else b64[n]

    (tmp_path / "d.index").write_text(f"00-database-info\tA\tB\nAbandon\tA\t{enc(len(body))}\nabandon\tA\t{enc(len(body))}\n")
    entries = list(S.dictd_entries(tmp_path, "d"))
    assert entries == [("Abandon, abandon", body)]  # one entry, both headwords
    texts = [t for _, _, t in S.dictd_texts(tmp_path, "d")]
    assert S.normalise(texts[0]).startswith("Abandon") and "1913 Webster" not in " ".join(texts)
    assert "2. To desert." in [S.normalise(t) for t in texts] and not any(t.startswith("Syn") for t in texts)


def test_build_corpus_normalises_drops_splits_and_dedups(tmp_path, monkeypatch):
    raws = {"a": [("k1", "T1", "  A text   that is long enough.  "), ("k2", "T2", "too short"),
                  ("k3", "T3", "A text that is long enough."), ("k4", "T4", "Word. " * 300)],
            "b": [("k1", "", "A text that is long enough."), ("k1", "", "Another text of the second source.")]}
    monkeypatch.setattr(S, "_raw", lambda source, cache: (iter(raws[source]), [{"package": source}]))
    out = tmp_path / "c.jsonl"
    m = S.build_corpus(out, tmp_path, ("a", "b"), progress=False)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows[0] == {"id": "a:k1", "title": "T1", "text": "A text that is long enough.", "source": "a"}
    assert [r["id"] for r in rows if r["source"] == "a"][1].startswith("a:k4~0")
    assert all(len(r["text"]) <= S.MAX_CHARS for r in rows)
    assert [r["id"] for r in rows if r["source"] == "b"] == ["b:k1"]  # the duplicate dropped, the id stays unique
    assert m["counts"]["a"]["short"] == 1 and m["counts"]["a"]["duplicate"] == 1 and m["counts"]["b"]["duplicate"] == 1
    assert m["synthetic"] is False and m["texts"] == len(rows)
    monkeypatch.setattr(S, "_raw", lambda source, cache: (_ for _ in ()).throw(AssertionError("not cached")))
    assert S.build_corpus(out, tmp_path, ("a", "b"), progress=False)["texts"] == len(rows)  # reused
