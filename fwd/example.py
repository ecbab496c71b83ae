"""`fwd example [NAME]`: the files fwd ships — the example configuration, helper files, Grafana
dashboard, alert rules and systemd unit.  Without NAME, lists them with their paths; with NAME,
prints that file (`fwd example fwd.toml > /etc/fwd/fwd.toml`)."""

from __future__ import annotations

import argparse
import sys

from fwd import assets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="a shipped file, as listed without NAME")


def main(args: argparse.Namespace) -> int:
    files = assets.shipped()
    if args.name is None:
        width = max(map(len, files))
        for name, path in files.items():
            print(f"{name:<{width}}  {path}")
        return 0
    if args.name not in files:
        print(f"fwd example: no shipped file {args.name!r}; one of: {', '.join(files)}",
              file=sys.stderr)
        return 2
    sys.stdout.write(files[args.name].read_text())
    return 0
