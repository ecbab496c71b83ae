"""Fragmented datagrams through fwd: the rules fwd installs have the kernel reassemble them
before the queue (fwd/rules.py), so fwd decides on whole datagrams and the kernel fragments
them again on the way out."""

from __future__ import annotations

from socket import IPPROTO_UDP as UDP

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
