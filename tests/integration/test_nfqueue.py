"""Real traffic through fwd on NFQUEUE: client -- fw (fwd) -- server, IPv4 and IPv6, on both
I/O backends (the verdict semantics must not depend on which reads the queue).

Policy (conftest.POLICY): established/related accepted, new accepted only from the client side,
everything else dropped.  Each test checks what the peers saw and what fwd's verdict log says.
"""

from __future__ import annotations

from socket import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP as TCP, IPPROTO_UDP as UDP

import sys

import pytest

from fwd import gateway
from fwd.netns import SERVER4, scratch, wait_links_up


@pytest.fixture(params=["native", "netfilterqueue"])
def io(request) -> str:
    return request.param

ECHO_REPLY = {4: 0, 6: 129}        # ICMP / ICMPv6 echo reply
PORT_UNREACHABLE = {4: 3, 6: 1}    # ICMP destination unreachable / ICMPv6 destination unreachable
ICMP_PROTO = {4: IPPROTO_ICMP, 6: IPPROTO_ICMPV6}


def test_outbound_tcp_connection_completes(fwd, peer, client, topo, addrs):
    server = peer(topo.server, "tcp-echo", addrs.server, 8080)
    assert client("tcp-connect", addrs.server, 8080) == {"reply": "hello fwd"}
    assert server.events() == [{"event": "accepted", "peer": addrs.client}]

    opening = fwd.verdicts(lambda v: v.proto == TCP and v.dport == 8080)[0]
    assert (opening.verdict, opening.state, opening.rule) == ("accept", "new", "from-client")
    # SYN-ACK and the echoed data at least; every packet from the server is a reply.
    replies = fwd.verdicts(lambda v: v.proto == TCP and v.src == addrs.server, at_least=2)
    assert len(replies) >= 2
    assert {(v.verdict, v.state, v.rule) for v in replies} == {("accept", "established", "stateful")}


def test_unsolicited_inbound_syn_dropped(fwd, peer, client, topo, addrs):
    listener = peer(topo.client, "tcp-echo", addrs.client, 8081)
    assert client("tcp-connect", addrs.client, 8081, ns=topo.server, timeout=1) == {
        "error": "TimeoutError"}
    assert listener.events(stop=True) == []  # nothing reached the client

    syns = fwd.verdicts(lambda v: v.proto == TCP and v.dport == 8081)
    assert syns
    assert {(v.verdict, v.state, v.rule, v.src) for v in syns} == {
        ("drop", "new", None, addrs.server)}


def test_udp_reply_is_established(fwd, peer, client, topo, addrs):
    server = peer(topo.server, "udp-echo", addrs.server, 9001)
    assert client("udp-request", addrs.server, 9001) == {"reply": "hello fwd"}
    assert [e["event"] for e in server.events()] == ["received"]

    request, = fwd.verdicts(lambda v: v.proto == UDP and v.dport == 9001)
    assert (request.verdict, request.state, request.rule) == ("accept", "new", "from-client")
    reply, = fwd.verdicts(lambda v: v.proto == UDP and v.sport == 9001)
    assert (reply.verdict, reply.state, reply.rule, reply.dst) == (
        "accept", "established", "stateful", addrs.client)


def test_port_unreachable_for_tracked_udp_is_related(fwd, client, addrs):
    # Nothing listens on the server's port 9002: its kernel answers with a port unreachable,
    # which must pass as related to the client's flow and reach the client's socket.
    assert client("udp-request", addrs.server, 9002) == {"error": "ConnectionRefusedError"}

    errors = fwd.verdicts(lambda v: v.proto == ICMP_PROTO[addrs.family]
                          and v.icmp_type == PORT_UNREACHABLE[addrs.family])
    assert len(errors) == 1
    assert (errors[0].verdict, errors[0].state, errors[0].rule, errors[0].src) == (
        "accept", "related", "stateful", addrs.server)


def test_ping(fwd, topo, addrs):
    ping = topo.run(topo.client, ["ping", "-c", "2", "-i", "0.2", "-W", "2", addrs.server],
                    check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr

    replies = fwd.verdicts(lambda v: v.proto == ICMP_PROTO[addrs.family]
                           and v.icmp_type == ECHO_REPLY[addrs.family], at_least=2)
    assert len(replies) == 2
    assert {(v.verdict, v.state, v.src) for v in replies} == {
        ("accept", "established", addrs.server)}


def test_full_table_early_drops_unassured(start_fwd, peer, client, topo, addrs):
    # A table of 4 entries in 4 buckets: each new flow beyond the fourth must evict an older
    # unreplied (unassured) one instead of being refused.
    flows = 24
    fwd = start_fwd(shards=1, buckets=4, max_entries=4)
    sink = peer(topo.server, "udp-sink", addrs.server, 9100, count=flows, timeout=3)
    sent = client("udp-flows", addrs.server, 9100, count=flows)
    assert len(set(sent["sports"])) == flows
    assert len(sink.events()) == flows  # every new flow was accepted

    new = fwd.verdicts(lambda v: v.proto == UDP and v.dport == 9100, at_least=flows)
    assert {v.sport for v in new} == set(sent["sports"])
    assert {(v.verdict, v.state) for v in new} == {("accept", "new")}

    # Still up, still tracking: a later request's reply is recognised.
    fwd.assert_running()
    echo = peer(topo.server, "udp-echo", addrs.server, 9101)
    assert client("udp-request", addrs.server, 9101) == {"reply": "hello fwd"}
    assert [e["event"] for e in echo.events()] == ["received"]
    reply, = fwd.verdicts(lambda v: v.proto == UDP and v.sport == 9101)
    assert (reply.verdict, reply.state) == ("accept", "established")


def test_flows_spread_over_several_queues(start_fwd, topo):
    """queue.count = 2: the kernel balances flows over queues 3 and 4 by address; one worker per
    queue, one shared table, the same verdicts."""
    fwd = start_fwd(queues=2)
    sources = [f"10.77.1.{i}" for i in range(10, 26)]
    for src in sources:
        topo.ip(topo.client, "addr", "replace", f"{src}/24", "dev", "eth0")
    script = ("import socket,sys\n"
              "for src in sys.argv[2:]:\n"
              "  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind((src,0))\n"
              "  s.sendto(b'x',(sys.argv[1],9999))\n")
    topo.run(topo.client, [sys.executable, "-c", script, SERVER4, *sources])
    seen = fwd.verdicts(lambda v: v.proto == UDP and v.dport == 9999, at_least=len(sources))
    assert {v.src for v in seen} == set(sources)
    assert {(v.verdict, v.state) for v in seen} == {("accept", "new")}
    rule = topo.run(topo.fw, ["iptables", "-S", "FWD"]).stdout
    assert "--queue-balance 3:4" in rule
    # Both queues were bound and handed packets: the kernel's id counter (8th column) moved.
    table = topo.run(topo.fw, ["cat", "/proc/net/netfilter/nfnetlink_queue"]).stdout
    ids = {int(f[0]): int(f[7]) for f in (line.split() for line in table.splitlines())}
    assert ids.keys() >= {3, 4} and ids[3] > 0 and ids[4] > 0


RAW_SEND = """
import socket, struct, sys
family, src, dst, port, csum = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
from scapy.all import IP, UDP, IPv6, raw
payload = b"checksum " + csum.encode()
ip = IP(src=src, dst=dst) if family == 4 else IPv6(src=src, dst=dst)
udp = bytearray(raw(ip / UDP(sport=4444, dport=port) / payload)[20 if family == 4 else 40:])
if csum == "bad":
    udp[7] ^= 0x55
# A raw socket: the kernel adds the IP header and leaves the checksum alone (CHECKSUM_NONE).
with socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6, socket.SOCK_RAW,
                   socket.IPPROTO_UDP) as s:
    s.sendto(bytes(udp), (dst, 0))
"""


def test_bad_checksum_from_a_raw_socket_is_dropped_as_invalid(fwd, peer, topo, addrs):
    """The kernel's conntrack drops what fwd now drops: a datagram whose checksum nobody
    verified (sent from a raw socket: CHECKSUM_NONE, unlike a UDP socket's CHECKSUM_PARTIAL,
    which the other tests' traffic has) and which is wrong.  The same datagram with its right
    checksum passes and arrives."""
    # count=1: the sink ends on the good datagram (scapy takes a while to start under load).
    sink = peer(topo.server, "udp-sink", addrs.server, 9003, count=1, timeout=15)
    for csum in ("bad", "good"):
        topo.run(topo.client, [sys.executable, "-c", RAW_SEND, str(addrs.family), addrs.client,
                               addrs.server, "9003", csum])
    assert [e["event"] for e in sink.events()] == ["received"]  # the good one
    logged = fwd.verdicts(lambda v: v.proto == UDP and v.dport == 9003, at_least=2)
    assert [(v.verdict, v.state, v.rule) for v in logged] == [
        ("drop", "invalid", None), ("accept", "new", "from-client")]


def test_rule_names_an_interface_created_after_fwd_started(start_fwd, client, peer, topo):
    """Rules match interface names as packets are decided: fwd starts with a rule naming
    "late0", which does not exist yet; once a new link (a namespace of its own behind a veth
    whose fw end is late0) comes up, its traffic is accepted by that rule, while the old client
    side, which no rule accepts, stays dropped."""
    fwd = start_fwd(policy=gateway.policy("stateful") +
                    '\n[[policy.rule]]\nname = "via-late"\niif = "late0"\nverdict = "accept"\n')
    assert client("udp-request", SERVER4, 9010, timeout=1) == {"error": "TimeoutError"}
    assert {v.verdict for v in fwd.verdicts(lambda v: v.proto == UDP and v.dport == 9010)} == {
        "drop"}
    with scratch("fwdt") as late:
        topo.ip(late, "link", "add", "name", "eth0", "type", "veth", "peer", "name", "late0",
                "netns", topo.fw)
        topo.ip(late, "addr", "add", "10.77.3.2/24", "dev", "eth0")
        topo.ip(topo.fw, "addr", "add", "10.77.3.1/24", "dev", "late0")
        topo.ip(late, "link", "set", "eth0", "up")
        topo.ip(topo.fw, "link", "set", "late0", "up")
        topo.ip(late, "route", "add", "default", "via", "10.77.3.1")
        wait_links_up(late, topo.fw)
        server = peer(topo.server, "tcp-echo", SERVER4, 8090)
        assert client("tcp-connect", SERVER4, 8090, ns=late) == {"reply": "hello fwd"}
        assert server.events() == [{"event": "accepted", "peer": "10.77.3.2"}]
    opening = fwd.verdicts(lambda v: v.proto == TCP and v.dport == 8090)[0]
    assert (opening.verdict, opening.state, opening.rule) == ("accept", "new", "via-late")
