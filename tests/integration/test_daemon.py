"""`fwd run` lifecycle: the queue rules it installs and removes, signals, exit statuses."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fwd.config import EXIT_CONFIG
from fwd.netns import SERVER4

TOOLS = ("iptables", "ip6tables")
CHAIN, QUEUE_NUM = "FWD", 3  # as in conftest.fwd_config
JUMP = f"-A FORWARD -j {CHAIN}"
QUEUE_RULE = f"-A {CHAIN} -j NFQUEUE --queue-num {QUEUE_NUM} --queue-bypass"  # on_stop "bypass"


def rules(topo, tool: str, chain: str) -> list[str] | None:
    """`tool -S chain` in the fw namespace without the policy line; None if there is no chain."""
    done = topo.run(topo.fw, [tool, "-w", "-S", chain], check=False)
    return [line for line in done.stdout.splitlines() if line.startswith("-A ")] \
        if done.returncode == 0 else None


def bound_queues(topo) -> list[int]:
    table = topo.run(topo.fw, ["cat", "/proc/net/netfilter/nfnetlink_queue"]).stdout
    return [int(line.split()[0]) for line in table.splitlines()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_rules_installed_then_removed_on_signal(start_fwd, topo, sig):
    fwd = start_fwd()
    assert bound_queues(topo) == [QUEUE_NUM]
    for tool in TOOLS:
        assert rules(topo, tool, "FORWARD") == [JUMP]
        assert rules(topo, tool, CHAIN) == [QUEUE_RULE]

    assert fwd.stop(sig) == 0, fwd.stderr()
    assert bound_queues(topo) == []
    for tool in TOOLS:
        assert rules(topo, tool, "FORWARD") == []
        assert rules(topo, tool, CHAIN) is None
    # With fwd gone and its rules removed, traffic is no longer queued (nor dropped).
    ping = topo.run(topo.client, ["ping", "-c", "1", "-W", "2", SERVER4], check=False)
    assert ping.returncode == 0


def test_stale_chain_is_replaced_and_removed(start_fwd, topo):
    # What a killed fwd leaves behind: its chain, hooked twice, with a rule of its own.
    for tool in TOOLS:
        for args in (["-N", CHAIN], ["-A", CHAIN, "-j", "DROP"],
                     ["-I", "FORWARD", "-j", CHAIN], ["-I", "FORWARD", "-j", CHAIN]):
            topo.run(topo.fw, [tool, "-w", *args])
    fwd = start_fwd()
    for tool in TOOLS:
        assert rules(topo, tool, "FORWARD") == [JUMP]
        assert rules(topo, tool, CHAIN) == [QUEUE_RULE]
    assert "taking over stale chain" in fwd.stderr()

    assert fwd.stop() == 0, fwd.stderr()
    for tool in TOOLS:
        assert rules(topo, tool, "FORWARD") == []
        assert rules(topo, tool, CHAIN) is None


def test_other_rules_are_left_alone(start_fwd, topo):
    # Rules of the operator's in the same hooks survive fwd's start and stop, in order.
    other = ["-A FORWARD -p udp -m udp --dport 4 -j ACCEPT"]
    for tool in TOOLS:
        topo.run(topo.fw, [tool, "-w", *other[0].split()])
    try:
        fwd = start_fwd()
        for tool in TOOLS:
            assert rules(topo, tool, "FORWARD") == [JUMP, *other]
        assert fwd.stop() == 0, fwd.stderr()
        for tool in TOOLS:
            assert rules(topo, tool, "FORWARD") == other
    finally:
        for tool in TOOLS:
            topo.run(topo.fw, [tool, "-w", "-F", "FORWARD"])


def test_invalid_config_exits_78_naming_the_key(tmp_path):
    # Checked before any socket or rule: runs anywhere, no namespace needed.
    bad = tmp_path / "bad.toml"
    bad.write_text("[conntrack]\nshards = 3\n")
    done = subprocess.run([sys.executable, "-m", "fwd", "run", "--config", str(bad)],
                          cwd=Path(__file__).parents[2], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == EXIT_CONFIG
    assert done.stderr.startswith("fwd: config error: conntrack.shards: ")
    assert done.stdout == ""
