"""Checksum verification as the kernel's conntrack does it (nf_conntrack_checksum=1): a TCP, UDP,
UDP-Lite, ICMP or ICMPv6 packet whose checksum is wrong is invalid, but only when the caller
flags it as not yet verified (IN_CSUM: NFQUEUE's CSUM_NOTVERIFIED); an unflagged packet
(CHECKSUM_PARTIAL or already verified) is never looked at."""

import struct

import pytest
from scapy.all import IP, TCP, in4_chksum, raw

from fwd import _core
from tests.pkt import C4, C6, S4, S6, echo, port_unreachable, tcp, udp

INV, NEW, EST = _core.STATE_INVALID, _core.STATE_NEW, _core.STATE_ESTABLISHED
CSUM = _core.IN_CSUM


def l4off(pkt: bytes) -> int:
    return (pkt[0] & 15) * 4 if pkt[0] >> 4 == 4 else 40


def corrupt(pkt: bytes, offset: int) -> bytes:
    """pkt with one byte of its transport part (offset from the transport header) changed."""
    i = l4off(pkt) + offset
    return pkt[:i] + bytes([pkt[i] ^ 0x5a]) + pkt[i + 1:]


def verdicts(e, packets, flags=CSUM, now=1.0):
    return [r[2] for r in e.process([(p, 0, 0, flags) for p in packets], now)]


def engine(**kw):
    return _core.Engine(shards=16, buckets=64, **kw)


# (name, packet, offset of its checksum field in the transport header)
PACKETS = [
    ("tcp4", tcp(C4, S4, 40000, 80, "S"), 16),
    ("tcp6", tcp(C6, S6, 40000, 80, "S"), 16),
    ("udp4", udp(C4, S4, 5000, 53, b"query"), 6),
    ("udp6", udp(C6, S6, 5000, 53, b"query"), 6),
    ("icmp", echo(C4, S4, 7), 2),
    ("icmpv6", echo(C6, S6, 7), 2),
]


@pytest.mark.parametrize("name,pkt,field", PACKETS, ids=[p[0] for p in PACKETS])
def test_bad_checksum_is_invalid_good_is_unchanged(name, pkt, field):
    e = engine()
    bad_field, bad_payload = corrupt(pkt, field), corrupt(pkt, len(pkt) - l4off(pkt) - 1)
    assert verdicts(e, [bad_field, bad_payload]) == [INV, INV]
    assert e.stats()["ct"]["invalid_checksum"] == 2
    assert e.connections(1.0) == []
    assert verdicts(e, [pkt]) == [NEW]
    assert e.stats()["ct"]["invalid_checksum"] == 2


@pytest.mark.parametrize("name,pkt,field", PACKETS, ids=[p[0] for p in PACKETS])
def test_unflagged_packet_is_not_checked(name, pkt, field):
    """CHECKSUM_PARTIAL (a packet from a local socket, between veths): the field is not
    filled in yet, so the packet is tracked whatever it holds."""
    e = engine()
    assert verdicts(e, [corrupt(pkt, field)], flags=0) == [NEW]
    assert e.stats()["ct"]["invalid_checksum"] == 0


def test_conntrack_checksum_off_checks_nothing():
    e = engine(checksum=False)
    assert verdicts(e, [corrupt(tcp(C4, S4, 40000, 80, "S"), 16)]) == [NEW]
    assert e.stats()["ct"]["invalid_checksum"] == 0


def test_udp_without_checksum_is_not_checked():
    pkt = bytearray(udp(C4, S4, 5000, 53, b"query"))
    pkt[20 + 6:20 + 8] = b"\0\0"  # UDP over IPv4: checksum 0 = none (so the kernel, v4 and v6)
    assert verdicts(engine(), [bytes(pkt)]) == [NEW]


def test_icmp_error_with_bad_checksum_is_invalid():
    e = engine()
    syn = tcp(C4, S4, 40000, 80, "S")
    assert verdicts(e, [syn]) == [NEW]
    err = port_unreachable(syn, S4, C4)
    assert verdicts(e, [corrupt(err, 2)]) == [INV]
    assert verdicts(e, [err]) == [_core.STATE_RELATED]


def test_rst_with_bad_checksum_leaves_the_connection_alone():
    """The case that made this matter: an in-window RST with a bad checksum, which the end host
    drops, must not close fwd's entry."""
    e = engine()
    c, s = (C4, 40000), (S4, 80)
    pkts = [raw(IP(src=c[0], dst=s[0]) / TCP(sport=c[1], dport=s[1], flags="S", seq=100)),
            raw(IP(src=s[0], dst=c[0]) / TCP(sport=s[1], dport=c[1], flags="SA", seq=500, ack=101)),
            raw(IP(src=c[0], dst=s[0]) / TCP(sport=c[1], dport=s[1], flags="A", seq=101, ack=501))]
    assert verdicts(e, pkts) == [NEW, EST, EST]
    rst = raw(IP(src=s[0], dst=c[0]) / TCP(sport=s[1], dport=c[1], flags="R", seq=501))
    assert verdicts(e, [corrupt(rst, 16)]) == [INV]
    (conn,) = e.connections(1.0)
    assert conn["state"] == "ESTABLISHED"
    assert verdicts(e, [rst]) == [EST]
    (conn,) = e.connections(1.0)
    assert conn["state"] == "CLOSE"


def udplite(payload: bytes = b"lite data", pseudo_proto: int = 17) -> bytes:
    """A UDP-Lite datagram (protocol 136) whose checksum covers all of it (coverage 0), summed
    with `pseudo_proto` in the pseudo-header: 17 as this kernel checks it, 136 as RFC 3828."""
    hdr = struct.pack("!HHHH", 5000, 5001, 0, 0)
    ip = IP(src=C4, dst=S4, proto=136)
    csum = in4_chksum(pseudo_proto, ip, hdr + payload)
    return raw(ip / (hdr[:6] + struct.pack("!H", csum) + payload))


def test_udplite_checksum_and_coverage():
    e = engine()
    good = udplite()
    assert verdicts(e, [corrupt(good, 9)]) == [INV]
    # The kernel drops an RFC 3828 checksum (protocol 136 summed), so fwd does too.
    assert verdicts(e, [udplite(pseudo_proto=136)]) == [INV]
    assert verdicts(e, [good]) == [NEW]
    assert e.stats()["ct"]["invalid_checksum"] == 2
    # Malformed whether or not the checksum is to be verified (the kernel's udplite_error).
    zero = bytearray(good)
    zero[26:28] = b"\0\0"  # UDP-Lite must carry a checksum
    beyond = bytearray(good)
    beyond[24:26] = struct.pack("!H", 200)  # coverage past the datagram
    short = bytearray(good)
    short[24:26] = struct.pack("!H", 7)  # coverage shorter than the header
    assert verdicts(e, [bytes(zero), bytes(beyond), bytes(short)], flags=0) == [INV] * 3
    assert e.stats()["ct"]["invalid_malformed"] == 3
    assert e.stats()["ct"]["invalid_checksum"] == 2
