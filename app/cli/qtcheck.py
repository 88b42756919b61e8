"""Before the viewer starts Qt on a Linux desktop: are the system libraries of Qt's xcb platform plugin there?

Without them (most often ``libxcb-cursor0``, which Qt 6.5+ needs and many desktops lack) Qt prints a screen of
text and *aborts* the process ("could not load the Qt platform plugin xcb ... This application failed to start"),
which no Python code can catch. So ``view`` asks ``ldd`` about the plugin first and, if libraries are missing,
stops with one line naming the Debian/Ubuntu packages to install (README: "System packages").

Read-only: nothing is loaded into the process; without ``ldd`` (or off Linux, or on another platform plugin) the
check says nothing and Qt starts as usual.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

#: shared library (soname) -> Debian/Ubuntu package, for what Qt's xcb plugin links against
PACKAGES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-glx.so.0": "libxcb-glx0",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
}

_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)


def missing_from_ldd(output: str) -> list[str]:
    """The sonames ``ldd`` reports as "not found", each once, in order."""
    seen: dict[str, None] = {}
    for name in _NOT_FOUND.findall(output):
        seen.setdefault(name, None)
    return list(seen)


def packages_for(sonames: list[str]) -> list[str]:
    """Debian/Ubuntu packages for the sonames (unknown ones are named as they are)."""
    return list(dict.fromkeys(PACKAGES.get(s, s) for s in sonames))


def xcb_plugin() -> Path | None:
    """PySide6's xcb platform plugin, found without importing Qt (also inside a PyInstaller bundle)."""
    roots = []
    if getattr(sys, "frozen", False):
        roots.append(Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent)) / "PySide6")
    spec = importlib.util.find_spec("PySide6")
    if spec and spec.submodule_search_locations:
        roots += [Path(p) for p in spec.submodule_search_locations]
    for root in roots:
        for sub in ("Qt/plugins/platforms", "plugins/platforms"):
            p = root / sub / "libqxcb.so"
            if p.is_file():
                return p
    return None


def uses_xcb(env: os._Environ | dict) -> bool:
    """Whether Qt will try the xcb plugin: Linux, and QT_QPA_PLATFORM is xcb, or unset with an X display (and
    not a Wayland session, where Qt 6 picks its wayland plugin)."""
    if not sys.platform.startswith("linux"):
        return False
    platform = (env.get("QT_QPA_PLATFORM") or "").split(":")[0].split(";")[0].strip()
    if platform:
        return platform == "xcb"
    wayland = env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE", "") == "wayland"
    return bool(env.get("DISPLAY")) and not wayland


def missing_xcb_libraries(plugin: Path | None = None) -> list[str]:
    """Sonames the xcb plugin needs and the system lacks ([] if none, or if it cannot be told)."""
    plugin = plugin or xcb_plugin()
    ldd = shutil.which("ldd")
    if plugin is None or ldd is None:
        return []
    try:
        r = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return missing_from_ldd(r.stdout + r.stderr)


def check_desktop(env: os._Environ | dict | None = None) -> None:
    """Raise :class:`~app.errors.DesktopError` (one line: what to install) when Qt's xcb plugin would abort."""
    env = os.environ if env is None else env
    if not uses_xcb(env):
        return
    missing = missing_xcb_libraries()
    if missing:
        from app.errors import DesktopError

        raise DesktopError(
            f"Qt cannot open a window here: its xcb platform plugin needs {', '.join(missing)}, which this system "
            f"lacks; install them (Debian/Ubuntu: sudo apt-get install {' '.join(packages_for(missing))}), or render "
            "headless with QT_QPA_PLATFORM=offscreen and --screenshot PNG"
        )
