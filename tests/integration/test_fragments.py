"""Fragmented datagrams through fwd: the rules fwd installs have the kernel reassemble them
before the queue (fwd/rules.py), so fwd decides on whole datagrams and the kernel fragments
them again on the way out."""

from __future__ import annotations

import json
import sys
import time
from socket import IPPROTO_UDP as UDP

from tests.integration.conftest import POLICY, fwd_config
from tests.integration.test_ctl import ctl

from fwd import fragments
from fwd.rules import TOOLS

SIZE = 3000  # over the veth MTU of 1500: the sender's kernel fragments it

SEND = """
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(b"f" * {size}, (sys.argv[1], int(sys.argv[2])))
try:
    print(len(s.recv(65535)))
except TimeoutError:
    print("timeout")
"""


def test_datagram_larger_than_the_mtu_passes_whole(fwd, peer, topo, addrs):
    for tool in TOOLS:
        raw = topo.run(topo.fw, [tool, "-w", "-t", "raw", "-S"]).stdout.splitlines()
        assert {"-A PREROUTING -j FWD", "-A OUTPUT -j FWD", "-A FWD -j CT --notrack",
                "-A FWD -m conntrack --ctstate UNTRACKED"} <= set(raw)
    _passes_whole(fwd, peer, topo, addrs)


def _passes_whole(fwd, peer, topo, addrs) -> None:
    server = peer(topo.server, "udp-echo", addrs.server, 9050)
    done = topo.run(topo.client, ["python3", "-c", SEND.format(size=SIZE), addrs.server,
                                  "9050"], timeout=20)
    assert done.stdout.split() == [str(SIZE)]  # the echo came back whole, both ways
    assert [e["event"] for e in server.events()] == ["received"]
    # One verdict each way: fwd saw whole datagrams, not fragments (a first fragment alone
    # would have been malformed, its UDP length longer than the packet).
    request, = fwd.verdicts(lambda v: v.proto == UDP and v.dport == 9050)
    assert (request.verdict, request.state) == ("accept", "new")
    reply, = fwd.verdicts(lambda v: v.proto == UDP and v.sport == 9050)
    assert (reply.verdict, reply.state) == ("accept", "established")


# Sent from the client by scapy: the first fragment of each of `count` datagrams (ids from
# `first_id`), never the rest, so each waits in the fw's reassembly until it times out or is
# refused for memory.
FIRST_FRAGMENTS = """
import sys
from scapy.all import IP, IPv6, IPv6ExtHdrFragment, UDP, conf, fragment, fragment6, send
conf.verb = 0
dst, src, count, first_id = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
frames = []
for i in range(first_id, first_id + count):
    payload = UDP(sport=4000, dport=9051) / (b"h" * 3000)
    if ":" in dst:
        frames.append(fragment6(IPv6(src=src, dst=dst) / IPv6ExtHdrFragment(id=i) / payload,
                                1400)[0])
    else:
        frames.append(fragment(IP(src=src, dst=dst, id=i) / payload, fragsize=1400)[0])
send(frames)
"""


def _fragments(fwd, family: str) -> dict[str, int]:
    return json.loads(ctl(fwd, "stats", "--json").stdout)["fragments"][family]


def _sysctls(topo, family: str) -> list[int]:
    return [int(topo.run(topo.fw, ["cat", f"{fragments.SYSCTL}/{p}"]).stdout)
            for p in fragments.LIMITS[family]]


def test_reassembly_is_bounded_as_configured_and_counted(start_fwd, peer, topo, addrs):
    family = f"ipv{addrs.family}"
    memory = 1 << 17
    fwd = start_fwd(policy=POLICY + f"\n[fragments]\nmemory = {memory}\ntimeout = 2\n")
    # The limits are the namespace's, for both families, low at 3/4 of high.
    for fam in fragments.FAMILIES:
        assert _sysctls(topo, fam) == [memory, memory * 3 // 4, 2]
    before = _fragments(fwd, family)
    assert (before["memory_limit"], before["timeout"]) == (memory, 2)

    # Far more incomplete datagrams than the memory holds: the kernel refuses the excess and
    # the rest time out after 2 s.
    count = 200
    topo.run(topo.client, [sys.executable, "-c", FIRST_FRAGMENTS, addrs.server, addrs.client,
                           str(count), "1000"], timeout=60)
    held = _fragments(fwd, family)
    if "memory" in held:  # IPv4: the kernel shows what is held: at most one fragment (its
        # buffer: 4 KiB at most here) over the limit, as it checks before it adds one
        assert memory * 3 // 4 < held["memory"] <= memory + 4096, held
    deadline = time.monotonic() + 10
    while True:
        after = _fragments(fwd, family)
        timed_out = after["timed_out"] - before["timed_out"]
        if timed_out and after.get("memory", 0) == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    failed = after["failed"] - before["failed"]
    assert 0 < timed_out < count, after  # some were held, the others refused for memory
    if family == "ipv4":
        assert failed == count, after    # every datagram ended as a counted failure
    else:  # the IPv6 conntrack defrag counts only what expired (README: Fragments)
        assert failed == timed_out, after
    assert not fwd.verdicts(lambda v: v.proto == UDP and v.dport == 9051, at_least=0)

    # With the held ones gone, a whole datagram passes again: the bound stopped nothing else.
    _passes_whole(fwd, peer, topo, addrs)


def test_reload_changes_the_limits_and_a_failed_one_keeps_them(start_fwd, topo):
    def config(fragments_section: str) -> str:
        return fwd_config(POLICY + "\n[fragments]\n" + fragments_section)

    fwd = start_fwd(policy=POLICY + "\n[fragments]\ntimeout = 7\n")
    assert [_sysctls(topo, fam)[2] for fam in fragments.FAMILIES] == [7, 7]
    fwd.write_config(config("memory = 262144\ntimeout = 9\n"))
    done = ctl(fwd, "reload")
    assert done.returncode == 0, done.stderr
    for fam in fragments.FAMILIES:
        assert _sysctls(topo, fam) == [262144, 196608, 9]
    # A reload the engine refuses after the limits were written (a broken helper file) puts
    # them back.
    fwd.write_config(config("memory = 524288\ntimeout = 3\n"))
    (fwd.config.parent / "helpers.d").mkdir()
    (fwd.config.parent / "helpers.d" / "sip.toml").write_text("ports = 5\n")
    done = ctl(fwd, "reload")
    assert done.returncode == 1 and "sip" in done.stderr, done.stderr
    for fam in fragments.FAMILIES:
        assert _sysctls(topo, fam) == [262144, 196608, 9]
