"""KenLM's command-line tools ``lmplz`` (estimates an ARPA n-gram model) and ``build_binary`` (makes it fast to load).

No wheel carries them: the ``kenlm`` package on PyPI builds only the Python module that *queries* a model. Its
source distribution holds the whole C++ tree, though, so ``python -m asrkit.kenlm_tools`` downloads that sdist
(the URL and SHA-256 from PyPI's JSON API; the download is checked against it), configures it with CMake and
builds the two tools into the cache directory: ``$ASRKIT_KENLM_BIN``, else ``$XDG_CACHE_HOME/asrkit/kenlm/bin``
(``~/.cache/...``). :func:`tool` finds a tool there first, then on ``PATH`` (a system-wide KenLM build).

Building needs a C++ compiler, CMake, Boost (program_options, system, thread, test) and the zlib, bzip2 and lzma
headers: on Debian/Ubuntu the packages in :data:`DEBIAN_PACKAGES`. About 40 s on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

TOOLS = ("lmplz", "build_binary")
BUILD_COMMAND = "python -m asrkit.kenlm_tools"
DEBIAN_PACKAGES = (
    "cmake g++ libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev "
    "zlib1g-dev libbz2-dev liblzma-dev"
)
DEFAULT_VERSION = "0.3.0"  # the kenlm release whose sdist is built when the kenlm module is not installed
PYPI_JSON = "https://pypi.org/pypi/kenlm/json"  # every release's files, with their SHA-256


def bin_dir() -> Path:
    """Where :func:`build` puts the tools: ``$ASRKIT_KENLM_BIN``, else ``<cache>/asrkit/kenlm/bin``."""
    if os.environ.get("ASRKIT_KENLM_BIN"):
        return Path(os.environ["ASRKIT_KENLM_BIN"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "asrkit" / "kenlm" / "bin"


def tool(name: str) -> Path:
    """The executable of KenLM's ``name`` (``lmplz`` or ``build_binary``): in :func:`bin_dir`, else on PATH."""
    built = bin_dir() / name
    if built.is_file() and os.access(built, os.X_OK):
        return built
    found = shutil.which(name)
    if found:
        return Path(found)
    raise FileNotFoundError(
        f"KenLM's {name} is neither in {bin_dir()} nor on PATH: build it with `{BUILD_COMMAND}` "
        f"(needs the Debian packages {DEBIAN_PACKAGES})"
    )


def installed_version() -> str:
    """The version of the installed ``kenlm`` Python module (so the tools write what it reads), else the default."""
    try:
        return metadata.version("kenlm")
    except metadata.PackageNotFoundError:
        return DEFAULT_VERSION


def sdist_url(version: str) -> tuple[str, str]:
    """The URL and SHA-256 of kenlm ``version``'s source distribution, as PyPI's JSON API lists them."""
    with urllib.request.urlopen(PYPI_JSON, timeout=60) as response:
        releases = json.load(response)["releases"]
    if version not in releases:
        raise ValueError(f"kenlm {version} is not on PyPI (releases: {', '.join(releases)})")
    for file in releases[version]:
        if file["packagetype"] == "sdist":
            return file["url"], file["digests"]["sha256"]
    raise ValueError(f"kenlm {version} on PyPI has no source distribution")


def download(url: str, sha256: str, target: Path) -> Path:
    """``url`` saved as ``target``, refused unless its SHA-256 is ``sha256``."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=120) as response, open(target, "wb") as out:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        raise ValueError(f"{url}: SHA-256 {digest.hexdigest()}, but PyPI lists {sha256}; not building it")
    return target


def _run(command: list[str], cwd: Path, step: str) -> None:
    log.info("%s: %s", step, " ".join(command))
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(
            f"{step} of KenLM failed (exit {done.returncode}); it needs the Debian packages {DEBIAN_PACKAGES}:\n{tail}"
        )


def build(version: str | None = None, target: Path | None = None, jobs: int | None = None) -> dict[str, Path]:
    """Download kenlm ``version``'s sdist, build ``lmplz`` and ``build_binary`` and copy them into ``target``."""
    version = version or installed_version()
    target = target or bin_dir()
    missing = [program for program in ("cmake", "make", "c++") if shutil.which(program) is None]
    if missing:
        raise FileNotFoundError(
            f"building KenLM's tools needs {', '.join(missing)}: install the Debian packages {DEBIAN_PACKAGES}"
        )
    url, sha256 = sdist_url(version)
    with tempfile.TemporaryDirectory(prefix="asrkit-kenlm-") as work:
        archive = download(url, sha256, Path(work) / Path(url).name)
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
        source = next(p.parent for p in Path(work).glob("*/CMakeLists.txt"))
        build_dir = source / "build"
        build_dir.mkdir()
        _run(["cmake", "-DCMAKE_BUILD_TYPE=Release", ".."], build_dir, "cmake")
        _run(["make", f"-j{jobs or os.cpu_count() or 1}", *TOOLS], build_dir, "make")
        target.mkdir(parents=True, exist_ok=True)
        built = {}
        for name in TOOLS:
            built[name] = Path(shutil.copy2(build_dir / "bin" / name, target / name))
    log.info("KenLM %s: %s built into %s", version, " and ".join(TOOLS), target)
    return built


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=BUILD_COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default=None, help="kenlm release on PyPI (default: the installed module's)")
    parser.add_argument("--bin-dir", type=Path, default=None, help=f"where the tools go (default: {bin_dir()})")
    parser.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: every core)")
    parser.add_argument("--force", action="store_true", help="rebuild even when both tools are there")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    target = args.bin_dir or bin_dir()
    if not args.force and all((target / name).is_file() for name in TOOLS):
        print(f"KenLM's tools are already in {target} (--force rebuilds them)")
        return
    for name, path in build(args.version, target, args.jobs).items():
        print(f"{name}\t{path}")


if __name__ == "__main__":
    main()
