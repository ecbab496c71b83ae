"""Parsing packets into tuples, and hashing tuples into buckets and shards."""

import pytest
from scapy.all import IP, TCP, UDP, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, raw

from fwd import _core
from tests.pkt import C4, C6, S4, S6, echo, port_unreachable, tcp, udp


def test_ipv4_tcp_tuple():
    p = _core.parse_packet(tcp(C4, S4, 40000, 80, "S"))
    assert p == {"kind": "tracked", "tuple": {"family": 4, "proto": 6, "src": C4, "dst": S4,
                                              "sport": 40000, "dport": 80},
                 "l4off": 20, "tcp_flags": 0x02}


def test_ipv6_udp_tuple():
    t = _core.parse_packet(udp(C6, S6, 5060, 5070))["tuple"]
    assert (t["family"], t["proto"], t["src"], t["dst"], t["sport"], t["dport"]) == (6, 17, C6, S6, 5060, 5070)


@pytest.mark.parametrize("ext", [
    IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(),
    IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrFragment(offset=0, m=1),
])
def test_ipv6_extension_headers_are_skipped(ext):
    data = raw(IPv6(src=C6, dst=S6) / ext / UDP(sport=1, dport=2) / b"x")
    p = _core.parse_packet(data)
    assert p["kind"] == "tracked"
    assert (p["tuple"]["proto"], p["tuple"]["sport"], p["tuple"]["dport"]) == (17, 1, 2)


def test_non_first_fragments_are_invalid():
    v6 = raw(IPv6(src=C6, dst=S6) / IPv6ExtHdrFragment(offset=8, nh=17) / (b"y" * 16))
    v4 = raw(IP(src=C4, dst=S4, frag=10, proto=17) / (b"z" * 16))
    for data in (v4, v6):
        assert _core.parse_packet(data)["kind"] == "invalid"
        assert _core.parse_packet(data)["error"] == "fragment"


def test_icmp_echo_tuple_uses_id_and_type():
    t = _core.parse_packet(echo(C4, S4, 77))["tuple"]
    assert (t["proto"], t["sport"], t["dport"]) == (1, 77, 8)
    t = _core.parse_packet(echo(C6, S6, 78, reply=True))["tuple"]
    assert (t["proto"], t["sport"], t["dport"]) == (58, 78, 129)


@pytest.mark.parametrize("src,dst", [(C4, S4), (C6, S6)])
def test_icmp_error_carries_the_quoted_tuple(src, dst):
    quoted = udp(src, dst, 5000, 53)
    p = _core.parse_packet(port_unreachable(quoted, dst, src))
    assert p["kind"] == "icmp_error"
    assert p["inner"] == {"family": p["tuple"]["family"], "proto": 17, "src": src, "dst": dst,
                          "sport": 5000, "dport": 53}


def test_icmp_error_quoting_only_eight_transport_bytes_is_enough():
    quoted = tcp(C4, S4, 40000, 80, "S")[:28]  # IPv4 header + 8 bytes
    assert _core.parse_packet(port_unreachable(quoted, S4, C4))["kind"] == "icmp_error"


@pytest.mark.parametrize("data,error", [
    (b"", "truncated"),
    (b"\x45" + b"\0" * 10, "truncated"),
    (b"\x75" + b"\0" * 40, "malformed"),  # IP version 7
    (raw(IP(src=C4, dst=S4, ihl=4) / UDP()), "malformed"),
    (tcp(C4, S4, 1, 2, "S")[:30], "truncated"),  # total length claims more than we have
    (raw(IP(src=C4, dst=S4) / TCP(dataofs=3)), "malformed"),
    (raw(IP(src=C4, dst=S4) / UDP(len=4)), "malformed"),
    (raw(IP(src=C4, dst=S4) / UDP(len=200)), "malformed"),
    (raw(IPv6(src=C6, dst=S6, plen=0) / UDP()), "malformed"),
    (raw(IPv6(src=C6, dst=S6, nh=0, plen=2)) + b"\x11\x05", "truncated"),  # hop-by-hop cut short
    (port_unreachable(b"\x45\0\0", S4, C4), "truncated"),  # quoted header cut short
    (port_unreachable(port_unreachable(udp(C4, S4, 1, 2), S4, C4), C4, S4), "malformed"),
])
def test_malformed_packets_are_invalid_never_a_crash(data, error):
    p = _core.parse_packet(data)
    assert p["kind"] == "invalid"
    assert p["error"] == error


def test_every_prefix_of_a_packet_parses_without_crashing():
    for data in (tcp(C6, S6, 1, 2, "S"), port_unreachable(udp(C4, S4, 1, 2), S4, C4)):
        for n in range(len(data)):
            assert _core.parse_packet(data[:n])["kind"] == "invalid"


def test_neighbour_discovery_is_untracked():
    from scapy.all import ICMPv6ND_NS
    assert _core.parse_packet(raw(IPv6(src=C6, dst=S6) / ICMPv6ND_NS(tgt=S6)))["kind"] == "untracked"


def test_placement_is_stable_per_seed_and_differs_across_seeds():
    pkts = [udp(C4, S4, 1000 + i, 53) for i in range(64)]
    a, b = _core.Engine(seed=1), _core.Engine(seed=1)
    c = _core.Engine(seed=2)
    assert [a.placement(p) for p in pkts] == [b.placement(p) for p in pkts]
    assert [a.placement(p) for p in pkts] != [c.placement(p) for p in pkts]


def test_placement_spreads_and_reply_tuple_hashes_elsewhere():
    e = _core.Engine(shards=1024, buckets=65536, seed=7)
    places = [e.placement(udp(C4, S4, 1000 + i, 53)) for i in range(2000)]
    shards = {p["shard"] for p in places}
    assert len(shards) > 800  # 2000 flows over 1024 shards: nearly all used
    assert sum(p["shard"] != p["reply_shard"] for p in places) > 1900
    assert all(p["shard"] == p["bucket"] % 1024 for p in places)


def test_random_seed_per_engine():
    p = udp(C4, S4, 1, 2)
    assert len({_core.Engine().placement(p)["bucket"] for _ in range(8)}) > 1


def test_copy_cut_short_by_the_queue_still_parses_when_headers_are_complete():
    data = udp(C4, S4, 1, 2, payload=b"p" * 1000)
    assert _core.parse_packet(data[:60])["kind"] == "invalid"  # no wire length: truncated
    p = _core.parse_packet(data[:60], len(data))
    assert p["kind"] == "tracked" and p["tuple"]["dport"] == 2
    v6 = tcp(C6, S6, 1, 2, "S")
    assert _core.parse_packet(v6[:50], len(v6))["kind"] == "invalid"  # TCP header cut: truncated
    assert _core.parse_packet(data[:60], len(data) - 1)["error"] == "truncated"


def test_tuple_hash_is_siphash_2_4():
    """The tuple hash is SipHash-2-4 (as the kernel's conntrack): the reference test vectors of
    its paper, key 00..0f, messages 00..07 and 00..27 (the tuple's 40 bytes)."""
    import ctypes
    from fwd import _core
    lib = ctypes.CDLL(_core.__file__)
    f = lib.fwd_siphash24
    f.restype = ctypes.c_uint64
    f.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint64, ctypes.c_uint64]
    k0, k1 = 0x0706050403020100, 0x0F0E0D0C0B0A0908
    for n, want in ((8, 0x93F5F5799A932462), (40, 0x0E3EA96B5304A7D0)):
        msg = ctypes.create_string_buffer(bytes(range(n)), n)
        assert f(msg, n // 8, k0, k1) == want
