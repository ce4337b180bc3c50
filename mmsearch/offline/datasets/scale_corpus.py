"""A million real English texts from Debian packages, for scale benchmarks (bench/scale.py, issue 32).

No synthetic text: every text is an entry, a sense or a paragraph of a packaged source —

- ``gcide``: the GNU Collaborative International Dictionary of English (dict-gcide, dictd format):
  each entry's paragraphs (its senses, notes, etymology), titled by the headword;
- ``wordnet``: WordNet 3.0 (wordnet-base), every part of speech: each synset's gloss, titled by its
  lemmas, and each example sentence;
- ``foldoc``, ``jargon``, ``devil``: the dictd dictionaries of computing, the Jargon File and The
  Devil's Dictionary (dict-foldoc, dict-jargon, dict-devil): each entry's paragraphs;
- ``debian``: the English descriptions of Debian's packages (Translation-en of bookworm main, fetched
  by apt-get into a private lists folder): one text per description paragraph, titled by the package;
- ``linux``: the paragraphs of the kernel's documentation (linux-doc-6.1 reStructuredText, English only);
- ``python``: the paragraphs of the Python 3.11 documentation (python3.11-doc, reStructuredText sources);
- ``perl``: the paragraphs of the Perl documentation (perl-doc, POD);
- ``man``: the paragraphs of the Linux manual pages (manpages, manpages-dev, roff);
- ``fortunes``: the fortune cookies of the fortunes and fortunes-min packages;
- ``javadoc``: the description blocks of the OpenJDK 17 API documentation (openjdk-17-doc, HTML);
- ``sphinx``: the paragraphs of Sphinx-built manuals (HTML: Django, SQLAlchemy, Sphinx, CMake, SymPy, pandas,
  SciPy, Astropy, scikit-learn, statsmodels; python-django-doc, ...), API pages included;
- ``postgres``: the paragraphs of the PostgreSQL 15 manual (postgresql-doc-15, HTML);
- ``rust``: the paragraphs of the Rust documentation (rust-doc, HTML: the books and the standard library's API).

Whitespace is normalised, markup dropped as far as a paragraph's words go (not a full renderer: an
odd macro may leave a trace), texts under MIN_CHARS dropped, longer than MAX_CHARS split at sentence
(else word) boundaries, exact duplicates (after normalisation) dropped, first occurrence kept in
source order. Each text gets a stable id ``source:key`` (the key from its file or entry and its place
there) and a title where the source has one. The output is build-index's JSONL shape
(``{"id", "title", "text", "source"}``) plus a manifest (``<out>.manifest.json``: counts per source,
drops, and the package versions and SHA-256s it came from); a complete output is reused.

    .venv/bin/python -m mmsearch.offline.datasets.scale_corpus [--out .mmsearch/data/scale/corpus.jsonl]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

from tqdm import tqdm

from mmsearch.errors import Unavailable
from mmsearch.offline.datasets.debian import deb_record, fetch_deb

CORPUS_VERSION = 2  # bump when the texts a source gives change: a cached output of another version is rebuilt
MIN_CHARS, MAX_CHARS = 20, 1000
SOURCES = ("gcide", "wordnet", "foldoc", "jargon", "devil", "debian", "linux", "python", "perl", "man", "fortunes", "javadoc",
           "sphinx", "postgres", "rust")
PACKAGES = {"gcide": ["dict-gcide"], "wordnet": ["wordnet-base"], "foldoc": ["dict-foldoc"], "jargon": ["dict-jargon"],
            "devil": ["dict-devil"], "linux": ["linux-doc-6.1"], "python": ["python3.11-doc"], "perl": ["perl-doc"],
            "man": ["manpages", "manpages-dev"], "fortunes": ["fortunes", "fortunes-min"], "javadoc": ["openjdk-17-doc"],
            "sphinx": ["python-django-doc", "python-sqlalchemy-doc", "sphinx-doc", "cmake-doc", "python-sympy-doc", "python-pandas-doc",
                       "python-scipy-doc", "python-astropy-doc", "python-sklearn-doc", "python-statsmodels-doc"],
            "postgres": ["postgresql-doc-15"], "rust": ["rust-doc"]}

Raw = tuple[str, str, str]  # (key within the source, title, text)
_WS = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def normalise(text: str) -> str:
    return _WS.sub(" ", text).strip()


def split_long(text: str, limit: int = MAX_CHARS) -> list[str]:
    """Pieces of at most ``limit`` characters, cut after a sentence (else between words, else anywhere)."""
    if len(text) <= limit:
        return [text]
    out: list[str] = []
    cur = ""
    for sentence in _SENTENCE_END.split(text):
        part = sentence
        while len(part) > limit:  # one sentence over the limit: between words
            cut = part.rfind(" ", 0, limit)
            cut = cut if cut > limit // 2 else limit
            if cur:
                out.append(cur)
                cur = ""
            out.append(part[:cut].strip())
            part = part[cut:].strip()
        if cur and len(cur) + 1 + len(part) > limit:
            out.append(cur)
            cur = part
        else:
            cur = f"{cur} {part}" if cur else part
    if cur:
        out.append(cur)
    return [p for p in out if p]


# --------------------------------------------------------------------------- dictd (gcide, foldoc, jargon, devil)
_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_DICT_TAG = re.compile(r"^\s*\[[^\]]*\]\s*$", re.M)  # "[1913 Webster]", "[WordNet 1.5]": sources, not text


def _b64(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


def dictd_entries(folder: Path, name: str) -> Iterator[tuple[str, str]]:
    """(headword, entry text) of a dictd dictionary, each entry once (headwords sharing one are joined)."""
    with gzip.open(folder / f"{name}.dict.dz") as f:
        data = f.read()
    heads: dict[tuple[int, int], list[str]] = {}
    for line in (folder / f"{name}.index").read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00") or parts[0].startswith("00-"):
            continue
        heads.setdefault((_b64(parts[1]), _b64(parts[2])), []).append(parts[0])
    for (off, size), words in sorted(heads.items()):
        yield ", ".join(dict.fromkeys(words)), data[off:off + size].decode("utf-8", errors="replace")


def dictd_texts(folder: Path, name: str) -> Iterator[Raw]:
    """Each entry's paragraphs; the first line of an entry that only repeats its headword is dropped."""
    for head, entry in dictd_entries(folder, name):
        paras = [normalise(p) for p in re.split(r"\n\s*\n", _DICT_TAG.sub("", entry))]
        if paras and normalise(paras[0]).lower() == head.lower():
            paras = paras[1:]
        key = head.split(", ")[0]
        for i, p in enumerate(paras):
            if p.startswith(("Syn: ", "See also")):
                continue
            yield f"{key}#{i}", head, p


# --------------------------------------------------------------------------- WordNet, all parts of speech
def wordnet_texts(folder: Path) -> Iterator[Raw]:
    for pos in ("noun", "verb", "adj", "adv"):
        with open(folder / f"usr/share/wordnet/data.{pos}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                head, sep, gloss = line.partition(" | ")
                fields = head.split()
                if not sep or len(fields) < 4:
                    continue
                count = int(fields[3], 16)
                words = ", ".join(fields[4 + 2 * i].replace("_", " ") for i in range(count))
                definition = gloss.split('; "')[0].strip().rstrip(";").strip()
                key = f"{pos}.{fields[0]}"
                yield key, words, definition
                for i, ex in enumerate(re.findall(r'"([^"]+)"', gloss)):
                    yield f"{key}.ex{i}", words, ex


# --------------------------------------------------------------------------- Debian package descriptions
def debian_lists(cache_dir: Path) -> Path:
    """A private apt lists folder holding bookworm's English descriptions (Translation-en): apt-get update
    with -o Dir::State::Lists (the system's lists keep no long descriptions: Acquire::Languages "none")."""
    # absolute: apt reads a relative Dir::State::Lists under its own Dir::State (/var/lib/apt), so the default
    # relative --cache had apt write the lists there and this check look for them here
    lists = (cache_dir / "apt-lists").resolve()
    if any(lists.glob("*_main_i18n_Translation-en*")):
        return lists
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["apt-get", "update", "-qq", "-o", f"Dir::State::Lists={lists}", "-o", "Acquire::Languages=en"],
                       check=False, capture_output=True, text=True, timeout=900)
    if not any(lists.glob("*_main_i18n_Translation-en*")):
        raise Unavailable("debian package registry", f"apt-get update (Translation-en) failed: {r.stderr.strip()[-300:]}")
    return lists


def _apt_cat(path: Path) -> str:
    """A (compressed) apt list file's text, through apt's own helper."""
    r = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(path)], check=True, capture_output=True, timeout=600)
    return r.stdout.decode("utf-8", errors="replace")


def debian_texts(lists: Path) -> Iterator[Raw]:
    files = sorted(lists.glob("*_main_i18n_Translation-en*"), key=lambda p: ("security" in p.name, "updates" in p.name, p.name))
    seen: set[str] = set()
    for path in files:
        for stanza in _apt_cat(path).split("\n\n"):
            pkg, desc = "", []
            for line in stanza.splitlines():
                if line.startswith("Package: "):
                    pkg = line[9:].strip()
                elif line.startswith("Description-en: "):
                    desc = [line[16:]]
                elif line.startswith(" ") and desc:
                    desc.append(line[1:])
            if not pkg or not desc or pkg in seen:
                continue
            seen.add(pkg)
            short = desc[0].strip()
            paras = [normalise(" ".join(p)) for p in _split_on(desc[1:], lambda x: x.strip() == ".")]
            yield pkg, f"{pkg}: {short}", short + (". " + paras[0] if paras else "")
            for i, p in enumerate(paras[1:], start=1):
                yield f"{pkg}#{i}", f"{pkg}: {short}", p


def _split_on(lines: list[str], is_break: Callable[[str], bool]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for line in lines:
        if is_break(line):
            out.append([])
        else:
            out[-1].append(line)
    return [p for p in out if p]


# --------------------------------------------------------------------------- reStructuredText (linux, python)
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+.:_])\1{2,}\s*$")
_RST_ROLE = re.compile(r":[\w:.+-]+:`([^`<]*?)(?:\s*<[^>]*>)?`")
_RST_LINK = re.compile(r"`([^`<]+?)\s*(?:<[^>]*>)?`__?")
_RST_INLINE = re.compile(r"``([^`]+)``|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*|\|([^|\s][^|]*)\|")
_RST_TABLE = re.compile(r"^\s*(\+[-=+]+\+|[=\s]{5,}$|\|.*\|\s*$)")


def rst_inline(text: str) -> str:
    text = _RST_ROLE.sub(lambda m: m.group(1).strip().lstrip("~!"), text)
    text = _RST_LINK.sub(lambda m: m.group(1), text)
    text = _RST_INLINE.sub(lambda m: next(g for g in m.groups() if g is not None), text)
    return text.replace("\\", "")


def rst_paragraphs(source: str) -> Iterator[tuple[str, str]]:
    """(section title, paragraph) of an reStructuredText document: directives, literal blocks, tables,
    comments and field lists are left out; list items and definitions are paragraphs of their own."""
    lines = source.splitlines()
    title, buf, i = "", list[str](), 0
    literal_indent: int | None = None  # inside a literal block (after "::") or a directive's body
    out: list[tuple[str, str]] = []

    def flush() -> None:
        if buf:
            out.append((title, rst_inline(" ".join(s.strip() for s in buf))))
            buf.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None:
            if stripped and indent <= literal_indent:
                literal_indent = None
            else:
                i += 1
                continue
        if not stripped:
            flush()
        elif i + 1 < len(lines) and _RST_UNDERLINE.match(lines[i + 1]) and len(lines[i + 1].strip()) >= len(stripped) - 1:
            flush()
            title = rst_inline(stripped)
            i += 1
        elif _RST_UNDERLINE.match(line) or _RST_TABLE.match(line):
            flush()
        elif stripped.startswith(".. ") or stripped == "..":
            flush()
            literal_indent = indent
        elif re.match(r"^:[\w -]+:", stripped):  # field list (metadata)
            flush()
        elif re.match(r"^([-*+]|\d+\.|#\.|\(?[a-z0-9]\))\s", stripped):  # a list item starts a paragraph
            flush()
            buf.append(re.sub(r"^([-*+]|\d+\.|#\.|\(?[a-z0-9]\))\s+", "", stripped))
        else:
            buf.append(line)
        if stripped.endswith("::") and not stripped.startswith(".."):
            if buf:
                buf[-1] = buf[-1].rstrip(":") + (":" if stripped != "::" else "")
            flush()
            literal_indent = indent
        i += 1
    flush()
    for t, raw in out:
        p = normalise(raw)
        if p and sum(c.isalpha() for c in p) >= len(p) // 2:  # words, not code or a table that slipped through
            yield t, p


def linux_texts(folder: Path) -> Iterator[Raw]:
    root = folder / "usr/share/doc/linux-doc-6.1/Documentation"
    for path in sorted(root.rglob("*.rst.gz")):
        rel = path.relative_to(root).as_posix()[: -len(".rst.gz")]
        if rel.startswith(("translations/", "devicetree/")):
            continue
        with gzip.open(path) as f:
            doc = f.read().decode("utf-8", errors="replace")
        for i, (title, para) in enumerate(rst_paragraphs(doc)):
            yield f"{rel}#{i}", title, para


def python_texts(folder: Path) -> Iterator[Raw]:
    root = folder / "usr/share/doc/python3.11/html/_sources"
    for path in sorted(root.rglob("*.rst.txt")):
        rel = path.relative_to(root).as_posix()[: -len(".rst.txt")]
        if rel.startswith("whatsnew/changelog"):
            continue
        for i, (title, para) in enumerate(rst_paragraphs(path.read_text(encoding="utf-8", errors="replace"))):
            yield f"{rel}#{i}", title, para


# --------------------------------------------------------------------------- POD (perl)
_POD_CODE = re.compile(r"[A-Z]<(?:<+\s+(.*?)\s+>+|([^<>]*))>")


def pod_inline(text: str) -> str:
    for _ in range(4):  # nested codes from the inside out
        new = _POD_CODE.sub(_pod_code, text)
        if new == text:
            break
        text = new
    return text


def _pod_code(m: re.Match[str]) -> str:
    letter, inner = m.group(0)[0], m.group(1) if m.group(1) is not None else m.group(2)
    if letter in "XZ":
        return ""
    if letter == "E":
        return html.unescape(f"&{inner};") if not inner.isdigit() else chr(int(inner))
    if letter == "L":
        return inner.split("|", 1)[0] if "|" in inner else inner.split("/", 1)[-1].strip('"') or inner
    return inner


def pod_paragraphs(source: str) -> Iterator[tuple[str, str]]:
    title, skip = "", False
    for block in re.split(r"\n\s*\n", source):
        if not block.strip():
            continue
        if block.startswith("="):
            cmd, _, rest = block.partition(" ")
            if cmd in ("=begin", "=for"):
                skip = cmd == "=begin"
            elif cmd == "=end":
                skip = False
            elif cmd.startswith("=head"):
                title = normalise(pod_inline(rest))
            elif cmd == "=item" and len(normalise(rest)) >= 40:
                yield title, normalise(pod_inline(rest))
            continue
        if skip or block[0] in " \t":  # verbatim (code)
            continue
        yield title, normalise(pod_inline(block))


def perl_texts(folder: Path) -> Iterator[Raw]:
    root = folder / "usr/share/perl/5.36.0/pod"
    for path in sorted(root.glob("*.pod")):
        for i, (title, para) in enumerate(pod_paragraphs(path.read_text(encoding="utf-8", errors="replace"))):
            yield f"{path.stem}#{i}", f"{path.stem}: {title}" if title else path.stem, para


# --------------------------------------------------------------------------- roff (man)
_ROFF_ESC = re.compile(r"\\(f(?:\[[^\]]*\]|\(..|.)|s[-+]?\d|\*(?:\[[^\]]*\]|\(..|.)|\((..)|\[([^\]]*)\]|[-&e|^0 ~c:%]|.)")
_ROFF_CHARS = {"em": "—", "en": "–", "aq": "'", "dq": '"', "lq": '"', "rq": '"', "oq": "'", "cq": "'", "bu": "•",
               "mu": "×", "co": "©", "rg": "®", "ti": "~", "ha": "^", "rs": "\\", "ga": "`", "hy": "-", "ra": "→",
               "->": "→", "<=": "≤", ">=": "≥", "!=": "≠", "pl": "+", "mi": "-", "eq": "=", "sl": "/", "bv": "|"}
_PARA_MACROS = {"PP", "P", "LP", "TP", "IP", "SH", "SS", "sp", "br", "HP", "TQ", "RS", "RE", "nf", "fi", "EX", "EE", "in", "ti"}
_TEXT_MACROS = {"B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "SM", "SB", "UR", "MT"}


def roff_inline(text: str) -> str:
    def esc(m: re.Match[str]) -> str:
        s = m.group(1)
        if s in ("-", "e", "~", " ", "0", "^", "|", "&", "c", ":", "%"):
            return {"-": "-", "e": "\\", "~": " ", " ": " ", "0": " "}.get(s, "")
        name = m.group(2) or m.group(3)
        if name is not None:
            return _ROFF_CHARS.get(name, "")
        return ""

    return _ROFF_ESC.sub(esc, text)


def roff_paragraphs(source: str) -> Iterator[tuple[str, str]]:
    """(section, paragraph) of a man page: requests and macros are paragraph breaks or dropped, the text
    macros keep their words, no-fill (code) blocks are left out."""
    section, buf, nofill = "", list[str](), False
    out: list[tuple[str, str]] = []

    def flush() -> None:
        if buf:
            out.append((section, " ".join(buf)))
            buf.clear()

    for line in source.splitlines():
        if line.startswith((".", "'")):
            parts = line[1:].strip().split(None, 1)
            name = parts[0] if parts else ""
            args = parts[1] if len(parts) > 1 else ""
            if name in ("nf", "EX"):
                flush()
                nofill = True
            elif name in ("fi", "EE"):
                nofill = False
            elif name in ("SH", "SS"):
                flush()
                section = normalise(roff_inline(args.replace('"', "")))
            elif name in _PARA_MACROS:
                flush()
            elif name in _TEXT_MACROS and not nofill:
                words = re.findall(r'"([^"]*)"|(\S+)', args)
                buf.append(roff_inline("".join(a or b for a, b in words) if name not in ("B", "I", "SM", "SB")
                                       else " ".join(a or b for a, b in words)))
            continue
        if nofill:
            continue
        if not line.strip():
            flush()
        else:
            buf.append(roff_inline(line))
    flush()
    for s, raw in out:
        p = normalise(raw)
        if p and sum(c.isalpha() for c in p) >= len(p) // 2:
            yield s, p


def man_texts(folders: list[Path]) -> Iterator[Raw]:
    for folder in folders:
        for path in sorted((folder / "usr/share/man").rglob("*.gz")):
            if path.is_symlink():  # another name of a page read under its own
                continue
            name = path.name[: -len(".gz")]
            with gzip.open(path) as f:
                raw = f.read().decode("utf-8", errors="replace")
            if raw.lstrip().startswith(".so "):  # a link to another page
                continue
            stem, _, sec = name.rpartition(".")
            for i, (section, para) in enumerate(roff_paragraphs(raw)):
                if section in ("NAME", "SYNOPSIS", "COLOPHON"):
                    continue
                yield f"{name}#{i}", f"{stem}({sec}) {section.lower()}".strip(), para


# --------------------------------------------------------------------------- fortunes
def fortune_texts(folders: list[Path]) -> Iterator[Raw]:
    for folder in folders:
        for path in sorted((folder / "usr/share/games/fortunes").iterdir()):
            if path.suffix or path.is_dir() or path.name in ("ascii-art", "art"):
                continue
            for i, block in enumerate(re.split(r"^%\s*$", path.read_text(encoding="utf-8", errors="replace"), flags=re.M)):
                yield f"{path.name}#{i}", path.name, block


# --------------------------------------------------------------------------- javadoc (HTML description blocks)
class _BlockParser(HTMLParser):
    """The text of javadoc's description blocks (<div class="block">) and the member each belongs to."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0  # >0 inside a block: div nesting
        self.cur: list[str] = []
        self.blocks: list[str] = []
        self.skip = 0  # inside <pre>, <code> blocks of code

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth:
            if tag == "div":
                self.depth += 1
            elif tag == "pre":
                self.skip += 1
            elif tag in ("p", "li", "br"):
                self.cur.append("\n\n")
        elif tag == "div" and ("class", "block") in attrs:
            self.depth = 1

    def handle_endtag(self, tag: str) -> None:
        if not self.depth:
            return
        if tag == "pre":
            self.skip = max(0, self.skip - 1)
        elif tag == "div":
            self.depth -= 1
            if not self.depth:
                self.blocks.append("".join(self.cur))
                self.cur = []

    def handle_data(self, data: str) -> None:
        if self.depth and not self.skip:
            self.cur.append(data)


def javadoc_texts(folder: Path) -> Iterator[Raw]:
    root = folder / "usr/share/doc/openjdk-17-jre-headless/api"
    if not root.is_dir():
        root = next(p for p in folder.rglob("api") if p.is_dir())
    for path in sorted(root.rglob("*.html")):
        rel = path.relative_to(root).as_posix()
        if "class-use/" in rel or rel.startswith(("index-files/", "serialized-form", "help-doc")) or rel.endswith(
                ("-summary.html", "-tree.html", "index-all.html")):
            continue  # indexes and summaries repeat the classes' own descriptions
        p = _BlockParser()
        p.feed(path.read_text(encoding="utf-8", errors="replace"))
        title = rel.rsplit("/", 1)[-1][: -len(".html")]
        module_path = rel[: -len(".html")].split("/")
        qualified = ".".join(module_path[1:]) if len(module_path) > 1 else module_path[0]  # (module folder/package/Class)
        n = 0
        for block in p.blocks:
            for para in re.split(r"\n\s*\n", block):
                yield f"{qualified}#{n}", title, para
                n += 1


# --------------------------------------------------------------------------- HTML manuals (Sphinx-built, PostgreSQL)
class _ParaParser(HTMLParser):
    """The text of each <p> outside code, scripts and navigation, and the page's <title>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title, self.paras = "", list[str]()
        self.cur: list[str] | None = None
        self.skip = 0
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("pre", "script", "style", "nav"):
            self.skip += 1
        elif tag == "p" and self.cur is None:
            self.cur = []
        elif tag == "title":
            self.in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("pre", "script", "style", "nav"):
            self.skip = max(0, self.skip - 1)
        elif tag == "p" and self.cur is not None:
            self.paras.append("".join(self.cur))
            self.cur = None
        elif tag == "title":
            self.in_title = False

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title += data
        elif self.cur is not None and not self.skip:
            self.cur.append(data)


_TITLE_TAIL = re.compile(r"\s+[—|–-]+\s+.*$")  # "Page — Django 3.2 documentation": the page's own title


def html_texts(folders: list[Path]) -> Iterator[Raw]:
    for folder in folders:
        package = folder.name
        for path in sorted(folder.rglob("*.html")):
            rel = path.relative_to(folder).as_posix()
            if "/_modules/" in rel or "/_static/" in rel or rel.endswith(("genindex.html", "search.html", "py-modindex.html")):
                continue  # highlighted source code, indexes
            p = _ParaParser()
            p.feed(path.read_text(encoding="utf-8", errors="replace"))
            title = _TITLE_TAIL.sub("", normalise(p.title))
            short = rel.split("/html/", 1)[-1][: -len(".html")]
            for i, para in enumerate(p.paras):
                yield f"{package}/{short}#{i}", title, para


# --------------------------------------------------------------------------- the corpus
def _raw(source: str, cache_dir: Path) -> tuple[Iterator[Raw], list[dict[str, str]]]:
    """One source's raw texts, and the packages (name, version, sha256) or list files they come from."""
    folders = [fetch_deb(p, cache_dir) for p in PACKAGES.get(source, [])]
    records = [deb_record(f) for f in folders]
    if source in ("gcide", "foldoc", "jargon", "devil"):
        return dictd_texts(folders[0] / "usr/share/dictd", source), records
    if source == "wordnet":
        return wordnet_texts(folders[0]), records
    if source == "debian":
        lists = debian_lists(cache_dir)
        files = sorted(lists.glob("*_main_i18n_Translation-en*"))
        return debian_texts(lists), [{"file": f.name, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()} for f in files]
    if source == "linux":
        return linux_texts(folders[0]), records
    if source == "python":
        return python_texts(folders[0]), records
    if source == "perl":
        return perl_texts(folders[0]), records
    if source == "man":
        return man_texts(folders), records
    if source == "fortunes":
        return fortune_texts(folders), records
    if source == "javadoc":
        return javadoc_texts(folders[0]), records
    if source in ("sphinx", "postgres", "rust"):
        return html_texts(folders), records
    raise ValueError(f"unknown source {source!r} (known: {', '.join(SOURCES)})")


def build_corpus(out: Path, cache_dir: Path, sources: tuple[str, ...] = SOURCES, progress: bool = True) -> dict[str, object]:
    """Write the corpus JSONL to ``out`` and its manifest beside it; reuse both when complete and current."""
    manifest_path = out.with_suffix(".manifest.json")
    if manifest_path.is_file() and out.is_file():
        m = json.loads(manifest_path.read_text())
        if m.get("version") == CORPUS_VERSION and m.get("sources_asked") == list(sources) and m.get("complete"):
            return dict(m)
    out.parent.mkdir(parents=True, exist_ok=True)
    seen: set[bytes] = set()
    counts: dict[str, dict[str, int]] = {}
    packages: dict[str, list[dict[str, str]]] = {}
    tmp = out.with_suffix(".jsonl.partial")
    with open(tmp, "w", encoding="utf-8") as f:
        for source in sources:
            raw, packages[source] = _raw(source, cache_dir)
            c = counts[source] = {"texts": 0, "raw": 0, "short": 0, "split": 0, "duplicate": 0}
            ids: set[str] = set()
            for key, title, raw_text in tqdm(raw, desc=source, unit=" raw", disable=not progress, mininterval=2.0):
                c["raw"] += 1
                text = normalise(raw_text)
                if len(text) < MIN_CHARS:
                    c["short"] += 1
                    continue
                pieces = split_long(text)
                c["split"] += len(pieces) > 1
                for k, piece in enumerate(pieces):
                    if len(piece) < MIN_CHARS:
                        c["short"] += 1
                        continue
                    digest = hashlib.blake2b(piece.encode("utf-8"), digest_size=12).digest()
                    if digest in seen:
                        c["duplicate"] += 1
                        continue
                    seen.add(digest)
                    doc_id = f"{source}:{key}" + (f"~{k}" if len(pieces) > 1 else "")
                    while doc_id in ids:  # (a key repeated within a source: keep ids unique and stable)
                        doc_id += "+"
                    ids.add(doc_id)
                    f.write(json.dumps({"id": doc_id, "title": normalise(title)[:200], "text": piece, "source": source},
                                       ensure_ascii=False) + "\n")
                    c["texts"] += 1
            if progress:
                print(f"{source}: {c['texts']:,} texts ({c['raw']:,} raw, {c['short']:,} short, {c['duplicate']:,} duplicates, "
                      f"{c['split']:,} split)", file=sys.stderr, flush=True)
    tmp.replace(out)
    manifest: dict[str, object] = {
        "version": CORPUS_VERSION, "complete": True, "sources_asked": list(sources), "file": out.name,
        "texts": sum(c["texts"] for c in counts.values()), "counts": counts, "packages": packages,
        "min_chars": MIN_CHARS, "max_chars": MAX_CHARS, "synthetic": False,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(".mmsearch/data/scale/corpus.jsonl"))
    ap.add_argument("--cache", type=Path, default=Path(".mmsearch/data"), help="where fetched packages are kept")
    ap.add_argument("--sources", default=",".join(SOURCES))
    args = ap.parse_args(argv)
    m = build_corpus(args.out, args.cache, tuple(s for s in args.sources.split(",") if s))
    counts = m["counts"]
    assert isinstance(counts, dict)
    print(f"corpus: {m['texts']:,} texts -> {args.out} | " + ", ".join(f"{s} {c['texts']:,}" for s, c in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
