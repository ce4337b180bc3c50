"""Fetch a Debian package's files without root installs: `apt-get download` + `dpkg -x` into a cache.

Each fetched .deb's SHA-256 is checked against the one apt's package list gives for that version
(apt checks it too) and recorded in the unpacked folder's ``.complete`` (``package version sha256``),
so a dataset built from the cache can name exactly what it was built from (``deb_record``).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from mmsearch.errors import Unavailable


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _listed_sha256(package: str, version: str) -> str | None:
    """The SHA-256 apt's package lists give for that version of the package (None: not listed)."""
    r = subprocess.run(["apt-cache", "show", f"{package}={version}"], check=False, capture_output=True, text=True, timeout=120)
    for line in r.stdout.splitlines():
        if line.startswith("SHA256:"):
            return line.split(":", 1)[1].strip()
    return None


def fetch_deb(package: str, cache_dir: Path) -> Path:
    """Return a folder holding the unpacked package, downloading it once per cache."""
    dest = cache_dir / package
    if (dest / ".complete").is_file():
        return dest
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        try:
            r = subprocess.run(["apt-get", "download", package], check=False, cwd=tmp, capture_output=True, text=True, timeout=600)
            if r.returncode != 0 and "Unable to locate" in r.stderr:
                subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True, timeout=600)
                r = subprocess.run(["apt-get", "download", package], check=False, cwd=tmp, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise Unavailable("debian package registry", f"apt-get download {package}: {e}") from e
        debs = list(Path(tmp).glob(f"{package}_*.deb"))
        if r.returncode != 0 or not debs:
            raise Unavailable("debian package registry", f"apt-get download {package} failed: {r.stderr.strip()[-300:]}")
        version = debs[0].name[len(package) + 1:].rsplit("_", 1)[0].replace("%3a", ":")
        digest = _sha256(debs[0])
        listed = _listed_sha256(package, version)
        if listed is not None and listed != digest:
            raise Unavailable("debian package registry", f"{debs[0].name}: SHA-256 {digest} is not the listed {listed}")
        unpacked = Path(tmp) / "root"
        subprocess.run(["dpkg", "-x", str(debs[0]), str(unpacked)], check=True, timeout=600)
        shutil.rmtree(dest, ignore_errors=True)
        unpacked.rename(dest)
    (dest / ".complete").write_text(f"{package} {version} {digest}\n")
    return dest


def deb_record(unpacked: Path) -> dict[str, str]:
    """{"package", "version", "sha256"} of a folder fetch_deb unpacked (older caches recorded the name only)."""
    parts = (unpacked / ".complete").read_text().split()
    return dict(zip(("package", "version", "sha256"), parts))
