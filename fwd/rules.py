"""The iptables rules that send packets to fwd's queue (queue.install_rules).

For iptables and ip6tables alike, in the filter table: a chain `queue.chain` holding
`-j NFQUEUE --queue-num N` (or `--queue-balance N:M` for several queues) `[--queue-bypass]`,
and a jump to it at the top of every hook in
`queue.hooks`.  In the raw table, a chain of the same name jumped to from PREROUTING and
OUTPUT, holding `-m conntrack --ctstate UNTRACKED` (it never matches there; it is what makes the
kernel register its conntrack and defrag hooks in this namespace, which `CT --notrack` alone
does not) and `-j CT --notrack`: fwd takes the kernel's conntrack's place, so the kernel tracks
nothing itself, but its defrag (which runs before raw) reassembles every datagram before the
queue and fragments it again on output: the engine and its helpers only ever see whole
datagrams (measured on this kernel: without the match, fragments reach the queue).  Every change is one iptables-restore transaction per tool and table, so packets
meet the old rules or the new ones, never a half-built chain:

- install() creates the chain, or takes over one an earlier fwd left (it was killed, or stopped
  with on_stop = "drop"): the chain's rules and all its hooks are replaced in the same
  transaction, so traffic the old chain blocked is not let through unfiltered in between.
- release(), at a clean stop or after a failed start, leaves traffic as queue.on_stop says:
  "bypass" removes the chain and its hooks; "drop" keeps them, and with nobody listening on the
  queue (and no --queue-bypass) the kernel drops what they send there.

The commands act on the network namespace fwd runs in.
"""

from __future__ import annotations

import logging
import subprocess

from fwd.config import HOOKS, QueueConfig

log = logging.getLogger(__name__)

TOOLS = ("iptables", "ip6tables")
RAW_HOOKS = ("PREROUTING", "OUTPUT")  # where the raw chain is jumped to from
RAW_RULES = ("-m conntrack --ctstate UNTRACKED", "-j CT --notrack")


class RulesError(Exception):
    """An iptables command failed; str() names the command and its message."""


def _run(argv: list[str], stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RulesError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def _chain_state(tool: str, chain: str, table: str = "filter") -> tuple[bool, list[str]]:
    """Whether `chain` exists in tool's `table`, and the built-in hooks that jump to it
    (a hook once per jump)."""
    lines = _run([tool, "-w", "-t", table, "-S"]).splitlines()
    hooks = HOOKS if table == "filter" else RAW_HOOKS
    jumps = [hook for hook in hooks for line in lines if line == f"-A {hook} -j {chain}"]
    return f"-N {chain}" in lines, jumps


def _commit(tool: str, commands: list[str], table: str = "filter") -> None:
    """Apply `commands` (iptables-save syntax) to tool's `table`, all or nothing."""
    _run([f"{tool}-restore", "-w", "--noflush"],
         stdin="\n".join([f"*{table}", *commands, "COMMIT", ""]))


def _install_chain(tool: str, table: str, chain: str, rules: tuple[str, ...],
                   hooks: tuple[str, ...]) -> None:
    """Creates (or takes over) `chain` in `table` holding `rules`, jumped to first from `hooks`
    (and no longer from where a stale chain was jumped to)."""
    _exists, jumps = _chain_state(tool, chain, table)
    _commit(tool, [
        f":{chain} - [0:0]",  # creates the chain, or empties the stale one
        *(f"-A {chain} {rule}" for rule in rules),
        *(f"-D {hook} -j {chain}" for hook in jumps),
        *(f"-I {hook} 1 -j {chain}" for hook in hooks),
    ], table)


def _remove_chain(tool: str, table: str, chain: str) -> None:
    _exists, jumps = _chain_state(tool, chain, table)
    _commit(tool, [*(f"-D {hook} -j {chain}" for hook in jumps),
                   f":{chain} - [0:0]", f"-X {chain}"], table)


class QueueRules:
    """Install the queue chain and its hooks; release them at stop as queue.on_stop says."""

    def __init__(self, queue: QueueConfig) -> None:
        self.queue = queue
        self.installed: list[str] = []  # tools whose chain this process installed

    def _target(self) -> str:
        bypass = " --queue-bypass" if self.queue.on_stop == "bypass" else ""
        q = self.queue
        queues = (f"--queue-num {q.num}" if q.count == 1
                  else f"--queue-balance {q.num}:{q.numbers[-1]}")
        return f"-j NFQUEUE {queues}{bypass}"

    def install(self) -> None:
        chain = self.queue.chain
        for tool in TOOLS:
            exists, jumps = _chain_state(tool, chain)
            if exists:
                log.warning("%s: taking over stale chain %s (jumped to from %s)", tool, chain,
                            ",".join(jumps) or "nowhere")
            self.installed.append(tool)
            _install_chain(tool, "raw", chain, RAW_RULES, RAW_HOOKS)
            _install_chain(tool, "filter", chain, (self._target(),), self.queue.hooks)
        log.info("queue rules installed: chain %s, hooks %s, queue %d, on_stop %s", chain,
                 ",".join(self.queue.hooks), self.queue.num, self.queue.on_stop)

    def release(self) -> None:
        """Leave traffic as queue.on_stop says for when fwd is not running.  "bypass": remove
        the chain and every jump to it, keep going past a failure, then report it."""
        tools, self.installed = self.installed, []
        chain = self.queue.chain
        if self.queue.on_stop == "drop":
            if tools:
                log.info("leaving chain %s in place: queued traffic is dropped until fwd is "
                         "back (on_stop = drop)", chain)
            return
        errors = []
        for tool in reversed(tools):
            for table in ("filter", "raw"):
                try:
                    _remove_chain(tool, table, chain)
                except RulesError as err:
                    errors.append(str(err))
        if errors:
            raise RulesError("; ".join(errors))
