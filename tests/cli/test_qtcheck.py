"""``view`` on a Linux desktop without the system libraries of Qt's xcb plugin: one line naming the packages to
install, exit code 2, instead of Qt's uncatchable abort."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.qtcheck import check_desktop, missing_from_ldd, missing_xcb_libraries, packages_for, uses_xcb, xcb_plugin
from app.errors import DesktopError

ROOT = Path(__file__).resolve().parents[2]

LDD_OUTPUT = """\
\tlinux-vdso.so.1 (0x00007ffd1b9f6000)
\tlibQt6XcbQpa.so.6 => /venv/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f0c5c200000)
\tlibxcb-cursor.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f0c5bfd0000)
\tlibxcb-cursor.so.0 => not found
"""


def test_ldd_output_to_packages_known_answer():
    assert missing_from_ldd(LDD_OUTPUT) == ["libxcb-cursor.so.0", "libxcb-icccm.so.4"]
    assert packages_for(["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libodd.so.9"]) == [
        "libxcb-cursor0",
        "libxcb-icccm4",
        "libodd.so.9",
    ]
    assert missing_from_ldd("\tlibxcb.so.1 => /lib/libxcb.so.1 (0x1)\n") == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Qt's xcb plugin is Linux only")
def test_which_sessions_use_xcb():
    assert uses_xcb({"DISPLAY": ":0"})
    assert uses_xcb({"QT_QPA_PLATFORM": "xcb"})
    assert not uses_xcb({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"})
    assert not uses_xcb({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"})
    assert not uses_xcb({})


def _fake_ldd(tmp_path: Path, output: str) -> dict:
    bindir = tmp_path / "bin"
    bindir.mkdir(parents=True)
    (bindir / "ldd").write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}EOF\n")
    (bindir / "ldd").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env.update(PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", DISPLAY=":99")
    return env


@pytest.mark.skipif(xcb_plugin() is None, reason="PySide6 has no xcb plugin here")
def test_view_names_the_packages_instead_of_aborting(tmp_path):
    env = _fake_ldd(tmp_path, LDD_OUTPUT)
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "view"], env=env, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "libxcb-cursor0" in lines[0] and "libxcb-icccm4" in lines[0] and "apt-get install" in lines[0]


@pytest.mark.skipif(xcb_plugin() is None, reason="PySide6 has no xcb plugin here")
def test_nothing_missing_means_no_complaint(tmp_path, monkeypatch):
    env = _fake_ldd(tmp_path, "\tlibxcb.so.1 => /lib/libxcb.so.1 (0x1)\n")
    monkeypatch.setenv("PATH", env["PATH"])
    assert missing_xcb_libraries() == []
    check_desktop({"DISPLAY": ":99"})  # no error
    monkeypatch.setenv("PATH", _fake_ldd(tmp_path / "x", LDD_OUTPUT)["PATH"])
    with pytest.raises(DesktopError, match="libxcb-cursor0"):
        check_desktop({"DISPLAY": ":99"})
    check_desktop({"DISPLAY": ":99", "QT_QPA_PLATFORM": "offscreen"})  # offscreen needs none of them
