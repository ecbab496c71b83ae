"""The `fwd` command line: one subcommand per module, each module owning its own arguments."""

from __future__ import annotations

import argparse
import importlib
import sys

from fwd import __version__

# subcommand -> (module, one-line help).  Each module has add_arguments(parser) and main(args) -> int.
SUBCOMMANDS = {
    "run": ("fwd.daemon", "run the firewall daemon on NFQUEUE"),
    "replay": ("fwd.replay", "run the engine offline over a pcap/pcapng capture"),
    "lab": ("fwd.lab", "build namespaces, run fwd between them, send real traffic, show verdicts"),
    "check-config": ("fwd.checkconfig", "check a configuration file as `fwd run` would; exit 78 "
                                        "on an error"),
    "ctl": ("fwd.control", "talk to the running daemon: connections, stats, reload"),
    "install": ("fwd.install", "install the configuration, helper files and systemd unit"),
    "example": ("fwd.example", "list the shipped example files, or print one"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fwd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fwd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return importlib.import_module(args._module).main(args)


if __name__ == "__main__":
    sys.exit(main())
