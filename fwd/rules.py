"""The iptables rules that send packets to fwd's queue (queue.install_rules).

For iptables and ip6tables alike, in the filter table: a chain `queue.chain` holding
`-j NFQUEUE --queue-num N [--queue-bypass]`, and a jump to it at the top of every hook in
`queue.hooks`.  Each step that succeeds records its undo, so `remove()` takes away exactly what
`install()` added, also after `install()` failed half way.  The commands act on the network
namespace fwd runs in.
"""

from __future__ import annotations

import logging
import subprocess

from fwd.config import HOOKS, QueueConfig

log = logging.getLogger(__name__)

TOOLS = ("iptables", "ip6tables")


class RulesError(Exception):
    """An iptables command failed; str() names the command and its message."""


def _xt(tool: str, *args: str, check: bool = True) -> bool:
    """Run one iptables/ip6tables command (waiting for the xtables lock); True if it succeeded."""
    argv = [tool, "-w", "-t", "filter", *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RulesError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.returncode == 0


class QueueRules:
    """Install/remove the queue chain and its hooks; use as a context manager."""

    def __init__(self, queue: QueueConfig) -> None:
        self.queue = queue
        self._undo: list[tuple[str, ...]] = []  # commands that reverse what was added, in order

    def _target(self) -> list[str]:
        target = ["-j", "NFQUEUE", "--queue-num", str(self.queue.num)]
        return target + ["--queue-bypass"] if self.queue.bypass else target

    def _remove_stale(self, tool: str) -> None:
        """A chain of our name left by an earlier run (e.g. killed): unhook it from every hook
        (that run may have had other hooks), flush and delete it."""
        chain = self.queue.chain
        if not _xt(tool, "-n", "-L", chain, check=False):
            return
        log.warning("%s: removing stale chain %s", tool, chain)
        for hook in HOOKS:
            while _xt(tool, "-D", hook, "-j", chain, check=False):
                pass
        _xt(tool, "-F", chain)
        _xt(tool, "-X", chain)

    def install(self) -> None:
        chain = self.queue.chain
        try:
            for tool in TOOLS:
                self._remove_stale(tool)
                _xt(tool, "-N", chain)
                self._undo.append((tool, "-X", chain))
                _xt(tool, "-A", chain, *self._target())
                self._undo.append((tool, "-F", chain))
                for hook in self.queue.hooks:
                    _xt(tool, "-I", hook, "1", "-j", chain)
                    self._undo.append((tool, "-D", hook, "-j", chain))
        except BaseException:
            self.remove()
            raise
        log.info("queue rules installed: chain %s, hooks %s, queue %d%s", chain,
                 ",".join(self.queue.hooks), self.queue.num,
                 " (bypass)" if self.queue.bypass else "")

    def remove(self) -> None:
        """Undo what install() added, newest first; keep going past failures, then report them."""
        errors = []
        while self._undo:
            tool, *args = self._undo.pop()
            try:
                _xt(tool, *args)
            except RulesError as err:
                errors.append(str(err))
        if errors:
            raise RulesError("; ".join(errors))

    def __enter__(self) -> "QueueRules":
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
