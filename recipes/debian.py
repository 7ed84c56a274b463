"""Debian packages from the contrib and non-free sections, without touching the system's apt sources.

    python3 -m recipes.debian download --dest data/uqm/debian uqm-voice uqm-content
    python3 -m recipes.debian install rhvoice rhvoice-english     (as root)

The machine's own sources may list only ``main``. Here apt reads a sources list of ours
(``main contrib non-free`` of the same mirror and release) with its own package lists and
cache under ``--apt-dir``, so the system's configuration and lists are never changed.
``download`` fetches the ``.deb`` files and unpacks them with ``dpkg-deb -x`` into a folder
(no root needed to read them); ``install`` installs packages system-wide through the same
lists (root). Standard library only: ``make setup`` runs it before the project's venv exists.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
COMPONENTS = "main contrib non-free"
DEFAULT_APT_DIR = Path("data/apt")


class DebianError(RuntimeError):
    """apt or dpkg failed; the message names the packages and the command's last words."""


def codename() -> str:
    """The release of this machine (``bookworm``), from /etc/os-release."""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    raise DebianError("/etc/os-release names no VERSION_CODENAME: not a Debian system?")


def apt_options(apt_dir: Path) -> list[str]:
    """apt-get options that use a sources list, package lists and cache of our own under ``apt_dir``."""
    apt_dir = apt_dir.resolve()
    sources = apt_dir / "sources.list"
    release = codename()
    text = "".join(
        f"deb [signed-by={KEYRING}] {MIRROR} {suite} {COMPONENTS}\n"
        for suite in (release, f"{release}-updates")
    )
    (apt_dir / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (apt_dir / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    if not sources.is_file() or sources.read_text() != text:
        sources.write_text(text)
    return [
        "-o", f"Dir::Etc::SourceList={sources}",
        "-o", f"Dir::Etc::SourceParts={apt_dir / 'sources.list.d'}",
        "-o", f"Dir::State::Lists={apt_dir / 'lists'}",
        "-o", f"Dir::Cache={apt_dir / 'cache'}",
        "-o", "APT::Get::List-Cleanup=0",
    ]  # fmt: skip


def _apt(apt_dir: Path, *args: str, packages: list[str]) -> None:
    command = ["apt-get", "-qq", *apt_options(apt_dir), *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise DebianError(f"apt-get {args[0]} {' '.join(packages)} failed: {' | '.join(detail)}")


def update(apt_dir: Path) -> None:
    """Fetch the package lists of our sources (skipped when they are already there)."""
    lists = apt_dir / "lists"
    if lists.is_dir() and any(lists.glob("*_Packages*")):
        return
    _apt(apt_dir, "update", packages=[])


def download(packages: list[str], dest: Path, apt_dir: Path = DEFAULT_APT_DIR) -> Path:
    """Download ``packages`` and unpack each into ``dest/root``; returns that folder.

    A package already unpacked (its ``.deb`` in ``dest`` and a ``dest/.<name>.unpacked``
    stamp) is not fetched again; an interrupted unpack is redone.
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = dest / "root"
    missing = [p for p in packages if not (dest / f".{p}.unpacked").exists()]
    if missing:
        update(apt_dir)
        with tempfile.TemporaryDirectory(dir=dest) as tmp:
            # apt-get download writes into the working directory.
            command = ["apt-get", "-qq", *apt_options(apt_dir), "download", *missing]
            result = subprocess.run(command, cwd=tmp, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                detail = result.stderr.strip().splitlines()[-3:]
                raise DebianError(f"apt-get download {' '.join(missing)} failed: {' | '.join(detail)}")
            for deb in sorted(Path(tmp).glob("*.deb")):
                name = deb.name.split("_", 1)[0]
                subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
                os.replace(deb, dest / deb.name)
                (dest / f".{name}.unpacked").touch()
    return root


def install(packages: list[str], apt_dir: Path = DEFAULT_APT_DIR) -> None:
    """Install ``packages`` system-wide (as root) from our sources, main included for dependencies."""
    update(apt_dir)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "-y", "-qq", "--no-install-recommends", *apt_options(apt_dir), "install", *packages]
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise DebianError(f"apt-get install {' '.join(packages)} failed: {' | '.join(detail)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m recipes.debian", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("download", "install"))
    parser.add_argument("packages", nargs="+")
    parser.add_argument("--dest", type=Path, help="download: the folder to unpack into")
    parser.add_argument(
        "--apt-dir", type=Path, default=DEFAULT_APT_DIR, help="our sources list, lists, cache"
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "download":
            if args.dest is None:
                parser.error("download needs --dest")
            print(download(args.packages, args.dest, args.apt_dir))
        else:
            install(args.packages, args.apt_dir)
    except (DebianError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
