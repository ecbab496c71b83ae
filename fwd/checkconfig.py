"""`fwd check-config`: check a configuration file the way `fwd run` does, without running.

It does everything the daemon does with the file before it touches the network: read and check
it (fwd.config), build an engine and compile the policy into it (fwd.engine.configure, the one
path used at start and at reload).  Interface names in rules are resolved too, so check where fwd
runs.  Prints "ok" and exits 0, or prints the error naming its key and exits 78 (EX_CONFIG).
The systemd unit runs it before each reload, so that `systemctl reload fwd` fails on a bad file.
"""

from __future__ import annotations

import argparse
import logging
import sys

from fwd import _core, config, engine, sdnotify


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=config.DEFAULT_PATH,
                        help=f"configuration file (TOML); default {config.DEFAULT_PATH}")


def build(path: str) -> tuple[config.Config, _core.Engine, list[str]]:
    """What `fwd run` builds from the file at `path`: the checked config, an engine with its
    policy, the rule names.  Raises ConfigError naming the key."""
    cfg = config.load(path)
    eng = engine.create_engine(cfg)
    return cfg, eng, engine.configure(eng, cfg)


def report(err: config.ConfigError) -> int:
    """Print a configuration error on stderr (as an error when stderr is the journal); returns
    the exit status for it."""
    prefix = f"<{sdnotify.priority(logging.ERROR)}>" if sdnotify.journal_stderr() else ""
    print(f"{prefix}fwd: config error: {err}", file=sys.stderr)
    return config.EXIT_CONFIG


def main(args: argparse.Namespace) -> int:
    try:
        build(args.config)
    except config.ConfigError as err:
        return report(err)
    print("ok")
    return 0
