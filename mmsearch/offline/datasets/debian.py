"""Fetch a Debian package's files without root installs: `apt-get download` + `dpkg -x` into a cache."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from mmsearch.errors import Unavailable


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
        unpacked = Path(tmp) / "root"
        subprocess.run(["dpkg", "-x", str(debs[0]), str(unpacked)], check=True, timeout=600)
        shutil.rmtree(dest, ignore_errors=True)
        unpacked.rename(dest)
    (dest / ".complete").write_text(package + "\n")
    return dest
