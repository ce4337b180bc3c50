"""GCIDE (Debian dict-gcide: the Collaborative International Dictionary of English, from Webster's
1913, GPL): a second dictionary, whose definitions describe WordNet's nouns in other words.

Used for the judged "definition" class (datasets/judged.py): a noun that WordNet knows in one sense
and GCIDE defines in one sense is the same thing described by another lexicographer. Entries GCIDE
took from WordNet 1.5 are skipped (they would copy the gloss searched for).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from mmsearch.offline.datasets.debian import fetch_deb

DICT = "usr/share/dictd/gcide.dict.dz"
INDEX = "usr/share/dictd/gcide.index"
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_SOURCE = re.compile(r"\[(?:\d{4} Webster|Webster \d{4}|PJC|WordNet|Century|Chambers|RH|NetDict)[^\]]*\]")
_ACCENT = re.compile(r"\[[a-zA-Z^=.'\"`~,]{1,6}\]")  # [imac], [a^], ["e]: pronunciation and accent markup
_HEAD = re.compile(r"^[^\n]*?\\[^\\]*\\(?:\s*\([^)]*\))?,\s*n\.(?:;\s*(?:[A-Z]\.\s*)?pl\.\s*\{[^}]*\}(?:\s*\([^)]*\))?)*"
                   r"\s*(?:\[[^\]]*\]\s*)?(?:\((?:[A-Z][A-Za-z.]*\s*)+\)\s*)*", re.S)


def _b64(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64.index(c)
    return n


def noun_definition(block: str) -> str | None:
    """The definition of a one-sense noun entry, cleaned of markup; None for anything else (other
    parts of speech, numbered senses, cross-references, definitions GCIDE took from WordNet)."""
    if re.search(r"^\s+2\.\s", block, re.M) or "WordNet" in block:
        return None
    end = _SOURCE.search(block)
    if end is None:
        return None
    text = _ACCENT.sub("", block[:end.start()].strip())
    head = _HEAD.match(text)
    if head is None:
        return None
    body = re.sub(r"^\s*1\.\s*", "", text[head.end():])
    body = re.sub(r"\s+", " ", body.replace("{", "").replace("}", "")).strip()
    body = re.sub(r"\s*--\s*[A-Z][\w. ]*$", "", body)  # a trailing citation ("--Shak.")
    body = re.sub(r"\[[^\]]*\]|\"[^\"]*\"", "", body)  # [Obs.], [Written also ...], quoted citations
    sentences = [x.strip() for x in re.split(r"(?<=[.;])\s+(?=[A-Z])", body) if x.strip()]
    sentences = [x for x in sentences if not re.match(r"(?i)(called also|written also|see |note:)", x)]
    if not sentences:
        return None
    body = sentences[0] if len(sentences[0].split()) >= 6 or len(sentences) == 1 else f"{sentences[0]} {sentences[1]}"
    body = re.split(r";?\s+--\s|;\s+as,\s", re.sub(r"\s+", " ", body))[0].strip()
    if len(body.split()) > 40:  # a paragraph: its first clauses
        body = " ".join(body.split()[:40]).rsplit(";", 1)[0]
    if not body[:1].isalpha() or re.match(r"(?i)(same as|see |pl\.|a variety of |one of the )", body) or "\\" in body:
        return None
    return body


def noun_definitions(cache_dir: Path) -> dict[str, list[str]]:
    """headword (lower case) -> the one-sense noun definitions of each of its entries, in index order."""
    root = fetch_deb("dict-gcide", cache_dir)
    with gzip.open(root / DICT) as fh:
        raw = fh.read()
    out: dict[str, list[str]] = {}
    seen: set[tuple[str, int]] = set()
    with open(root / INDEX, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3 or parts[0].startswith("00-database"):
                continue
            word, off, size = parts[0].lower(), _b64(parts[1]), _b64(parts[2])
            if (word, off) in seen:
                continue
            seen.add((word, off))
            block = raw[off:off + size].decode("utf-8", errors="replace").lstrip()
            if block.split(" \\", 1)[0].lower() != word:  # an entry of a longer headword ("lucuma" under "marmalade")
                continue
            if not re.search(r",\s*n\.", block[:400]):
                out.setdefault(word, [])
                out[word].append("")  # another part of speech or no parse: counted, so homographs are seen
                continue
            out.setdefault(word, []).append(noun_definition(block) or "")
    return out
