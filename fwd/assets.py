"""The files fwd ships besides its code: the example configuration and helper files, the
Grafana dashboard and the alert rules (etc/), and the systemd unit (systemd/).

Installed from a wheel they are package data under fwd/data/ (setup.py copies them there); run
from a source checkout they are the checkout's own etc/ and systemd/."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
UNIT = "fwd.service"


def root() -> Path:
    """The folder holding etc/ and systemd/."""
    packaged = _PACKAGE / "data"
    return packaged if packaged.is_dir() else _PACKAGE.parent


def shipped() -> dict[str, Path]:
    """Every shipped file by its name: its path under etc/ ("fwd.toml", "helpers.d/sip.toml"),
    or its file name for the unit ("fwd.service")."""
    etc = root() / "etc"
    files = {p.relative_to(etc).as_posix(): p for p in sorted(etc.rglob("*")) if p.is_file()}
    files[UNIT] = root() / "systemd" / UNIT
    return files
