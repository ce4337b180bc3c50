"""The Debian descriptions' apt lists folder is handed to apt as an absolute path: apt reads a relative
Dir::State::Lists under its own /var/lib/apt, so a relative --cache (the default) wrote the lists there
and the corpus build then failed, finding none in its cache."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mmsearch.errors import Unavailable
from mmsearch.offline.datasets import scale_corpus as SC


def test_a_relative_cache_reaches_apt_as_an_absolute_lists_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        seen.append(cmd)
        lists = Path(next(a.split("=", 1)[1] for a in cmd if a.startswith("Dir::State::Lists=")))
        (lists / "deb.debian.org_debian_dists_bookworm_main_i18n_Translation-en.lz4").write_bytes(b"")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(SC.subprocess, "run", fake_run)
    lists = SC.debian_lists(Path("rel/cache"))
    arg = next(a for a in seen[0] if a.startswith("Dir::State::Lists="))
    assert Path(arg.split("=", 1)[1]).is_absolute()
    assert lists == (tmp_path / "rel" / "cache" / "apt-lists")
    assert SC.debian_lists(Path("rel/cache")) == lists and len(seen) == 1  # found in the cache: apt not run again


def test_apt_leaving_no_lists_is_unavailable_with_its_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SC.subprocess, "run",
                        lambda cmd, **_: subprocess.CompletedProcess(cmd, 100, "", "E: Could not resolve deb.debian.org"))
    with pytest.raises(Unavailable, match="Could not resolve"):
        SC.debian_lists(tmp_path)
