"""`fwd install [--root DIR] [--force]`: installs fwd as a service — the example configuration
and helper files into /etc/fwd/ (existing files are kept unless --force) and the systemd unit
into /etc/systemd/system/, its commands pointing at this installation's `fwd`.  --root stages
all of it under another folder (a package build, an image)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fwd import assets

CONFIG_DIR = "etc/fwd"
UNIT_DIR = "etc/systemd/system"
UNIT_FWD = "/opt/fwd/bin/fwd"  # the command the shipped unit names (README: /opt/fwd)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default="/", help="install under this folder (default /)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite configuration files that exist")


def fwd_command() -> str:
    """How the unit runs this installation: its `fwd` script, else its Python with -m fwd."""
    script = Path(sys.executable).parent / "fwd"
    return str(script) if script.is_file() else f"{sys.executable} -m fwd"


def _write(dest: Path, text: str, mode: int, force: bool) -> None:
    if dest.exists() and not force:
        print(f"kept      {dest} (exists; --force replaces it)")
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    os.chmod(dest, mode)
    print(f"installed {dest}")


def main(args: argparse.Namespace) -> int:
    root = Path(args.root)
    for name, src in assets.shipped().items():
        if name == assets.UNIT:
            unit = src.read_text().replace(UNIT_FWD, fwd_command())
            _write(root / UNIT_DIR / name, unit, 0o644, force=True)
        elif name == "fwd.toml" or name.startswith("helpers.d/"):
            # The configuration may hold secrets of the site: root only, as /etc/fwd itself.
            _write(root / CONFIG_DIR / name, src.read_text(), 0o600, args.force)
    (root / CONFIG_DIR).chmod(0o700)
    print("next: fwd check-config, then systemctl daemon-reload && systemctl enable --now fwd")
    return 0
