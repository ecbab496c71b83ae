"""Packet sequences for the differential harness: named scenarios and seeded random ones.

A sequence is a list of Steps, each one raw IP packet entering the router from the client
side ("c") or the server side ("s").  Every sequence gets its own client port (and ICMP echo
id) so the sequences of one batch never share a connection.  Addresses are those of
fwd.netns plus one extra host on each side (kernel.py routes to them).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

from scapy.all import (ICMP, IP, TCP, UDP, ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest,
                       ICMPv6PacketTooBig, ICMPv6TimeExceeded, IPv6, IPv6ExtHdrFragment, raw)

from scapy.layers.inet import in4_chksum
from scapy.layers.inet6 import in6_chksum

from fwd.netns import CLIENT4, CLIENT6, SERVER4, SERVER6

from .kernel import CLIENT_SIDE_HOSTS, SERVER_SIDE_HOSTS

ADDR = {4: (CLIENT4, SERVER4), 6: (CLIENT6, SERVER6)}
OTHER_C = {f: CLIENT_SIDE_HOSTS[f][0] for f in (4, 6)}  # another host on the client side
OTHER_S = {f: SERVER_SIDE_HOSTS[f][0] for f in (4, 6)}  # ... on the server side


@dataclass
class Step:
    side: str           # "c": enters from the client side, "s": from the server side
    packet: bytes       # raw IP
    what: str           # short description; disagreements are grouped by it
    sleep: float = 0.0  # seconds to wait before sending


@dataclass
class Sequence:
    name: str
    steps: list[Step] = field(default_factory=list)


def l3(src: str, dst: str, **kw):
    return IPv6(src=src, dst=dst, **kw) if ":" in src else IP(src=src, dst=dst, **kw)


class Tcp:
    """One TCP connection's packets, with the sequence numbers a real pair of stacks would use
    unless told otherwise (seq/ack given explicitly, or `dseq`/`dack` offsets)."""

    def __init__(self, family: int, sport: int, dport: int = 80, cisn: int = 1000,
                 sisn: int = 7_000_000):
        self.family, self.sport, self.dport = family, sport, dport
        self.next = {"c": cisn, "s": sisn}

    def pkt(self, side: str, flags: str, seq: int | None = None, ack: int | None = None,
            data: bytes = b"", win: int = 64240, options=(), dseq: int = 0, dack: int = 0,
            what: str | None = None, advance: bool = True) -> Step:
        c, s = ADDR[self.family]
        src, dst, sp, dp = (c, s, self.sport, self.dport) if side == "c" else \
            (s, c, self.dport, self.sport)
        other = "s" if side == "c" else "c"
        seq = (self.next[side] if seq is None else seq) + dseq
        ack = (self.next[other] if ack is None else ack) + dack
        if "A" not in flags and ack == self.next[other] and not dack:
            ack = 0
        tcp = TCP(sport=sp, dport=dp, flags=flags, seq=seq % 2**32, ack=ack % 2**32,
                  window=win, options=list(options))
        if advance and not dseq:
            self.next[side] = seq + len(data) + ("S" in flags) + ("F" in flags)
        return Step(side, raw(l3(src, dst) / tcp / data),
                    what or f"tcp {side}:{flags or '-'}{' +data' if data else ''}")

    def c(self, flags: str, **kw) -> Step:
        return self.pkt("c", flags, **kw)

    def s(self, flags: str, **kw) -> Step:
        return self.pkt("s", flags, **kw)

    def handshake(self, options=()) -> list[Step]:
        return [self.c("S", options=options), self.s("SA", options=options), self.c("A")]

    def data(self, side: str, n: int = 100) -> list[Step]:
        other = "s" if side == "c" else "c"
        return [self.pkt(side, "PA", data=b"d" * n), self.pkt(other, "A")]

    def close(self, first: str = "c") -> list[Step]:
        other = "s" if first == "c" else "c"
        return [self.pkt(first, "FA"), self.pkt(other, "A"), self.pkt(other, "FA"),
                self.pkt(first, "A")]


def udp(family: int, side: str, sport: int, dport: int = 53, data: bytes = b"q",
        what: str | None = None) -> Step:
    c, s = ADDR[family]
    src, dst, sp, dp = (c, s, sport, dport) if side == "c" else (s, c, dport, sport)
    return Step(side, raw(l3(src, dst) / UDP(sport=sp, dport=dp) / data), what or f"udp {side}")


def udplite(family: int, side: str, sport: int, pseudo_proto: int = 17) -> Step:
    """A UDP-Lite datagram (protocol 136, full coverage) whose checksum is summed with
    `pseudo_proto` in the pseudo-header: 17 is what this kernel verifies, 136 is RFC 3828."""
    c, s = ADDR[family]
    src, dst, sp, dp = (c, s, sport, 5001) if side == "c" else (s, c, 5001, sport)
    hdr, data = struct.pack("!HHHH", sp, dp, 0, 0), b"lite"
    ip = l3(src, dst)
    if family == 6:
        ip.nh = 136
    else:
        ip.proto = 136
    sumfn = in6_chksum if family == 6 else in4_chksum
    csum = sumfn(pseudo_proto, ip, hdr + data)
    return Step(side, raw(ip / (hdr[:6] + struct.pack("!H", csum) + data)),
                f"udplite {side} sum{pseudo_proto}")


def echo(family: int, side: str, ident: int, reply: bool = False) -> Step:
    c, s = ADDR[family]
    src, dst = (c, s) if side == "c" else (s, c)
    if family == 4:
        msg = ICMP(type=0 if reply else 8, id=ident)
    else:
        msg = ICMPv6EchoReply(id=ident) if reply else ICMPv6EchoRequest(id=ident)
    return Step(side, raw(l3(src, dst) / msg), f"icmp {side}:echo-{'reply' if reply else 'req'}")


def icmp_error(quoted: bytes, src: str, dst: str, side: str, what: str, kind: str = "unreach"
               ) -> Step:
    """An ICMP(v6) error from src to dst quoting `quoted`, entering from `side`."""
    if ":" in src:
        msg = {"unreach": ICMPv6DestUnreach(code=4), "toobig": ICMPv6PacketTooBig(mtu=1280),
               "ttl": ICMPv6TimeExceeded()}[kind]
    else:
        msg = {"unreach": ICMP(type=3, code=3), "toobig": ICMP(type=3, code=4, nexthopmtu=576),
               "ttl": ICMP(type=11)}[kind]
    return Step(side, raw(l3(src, dst) / msg / quoted[:128]), f"icmp-err {kind} {what}")


def fragments(family: int, side: str, sport: int, payload: bytes, cuts: list[tuple[int, int]],
              order: list[int] | None = None, ident: int = 0x4242, what: str = "frag"
              ) -> list[Step]:
    """A UDP datagram cut into fragments [start, end) of its IP payload (multiples of 8 but the
    last), sent in `order`."""
    c, s = ADDR[family]
    src, dst, sp, dp = (c, s, sport, 53) if side == "c" else (s, c, 53, sport)
    # the UDP header and payload, checksummed over the real addresses' pseudo header
    whole = raw((l3(src, dst) / UDP(sport=sp, dport=dp) / payload))[20 if family == 4 else 40:]
    steps = []
    for i, (a, b) in enumerate(cuts):
        more = b < len(whole)
        chunk = whole[a:b]
        if family == 4:
            pkt = IP(src=src, dst=dst, id=ident, proto=17, frag=a // 8,
                     flags="MF" if more else 0) / chunk
        else:
            pkt = IPv6(src=src, dst=dst) / IPv6ExtHdrFragment(
                nh=17, offset=a // 8, m=int(more), id=ident) / chunk
        steps.append(Step(side, raw(pkt), f"{what} {'first' if a == 0 else 'last' if not more else 'middle'}"))
    return [steps[i] for i in (order or range(len(steps)))]


def bad_checksum(step: Step) -> Step:
    """The same packet with its transport checksum off by one (TCP, UDP, ICMP or ICMPv6)."""
    pkt = bytearray(step.packet)
    l4 = (pkt[0] & 15) * 4 if pkt[0] >> 4 == 4 else 40
    proto = pkt[9] if pkt[0] >> 4 == 4 else pkt[6]
    field = l4 + {6: 16, 17: 6}.get(proto, 2)
    pkt[field + 1] ^= 1
    return Step(step.side, bytes(pkt), f"{step.what} bad-checksum", step.sleep)


# --- named scenarios: the coverage list of issue 11 ------------------------------------------
def named(family: int, port0: int) -> list[Sequence]:
    seqs: list[Sequence] = []
    ports = iter(range(port0, port0 + 1000))

    def add(name: str, steps: list[Step]) -> None:
        seqs.append(Sequence(f"{name}/v{family}", steps))

    t = Tcp(family, next(ports))
    add("handshake-data-close", [*t.handshake(), *t.data("c"), *t.data("s"), *t.close("c")])
    t = Tcp(family, next(ports))
    add("passive-close", [*t.handshake(), *t.data("c"), *t.close("s")])
    t = Tcp(family, next(ports))
    add("syn-retransmit", [t.c("S"), t.c("S", dseq=-1), t.s("SA"), t.c("A"), *t.data("c")])
    t = Tcp(family, next(ports))
    first = t.c("S")
    add("syn-retry-new-isn", [first, t.c("S", seq=5000), t.s("SA"), t.c("A"), *t.data("s")])
    t = Tcp(family, next(ports))
    add("synack-retransmit", [t.c("S"), t.s("SA"), t.s("SA", dseq=-1), t.c("A"), *t.data("c")])
    t = Tcp(family, next(ports))
    add("simultaneous-open", [t.c("S"), t.s("S"), t.s("SA", dseq=-1), t.c("SA", dseq=-1),
                              t.c("A"), t.s("A"), *t.data("c")])
    t = Tcp(family, next(ports))
    ws = [("MSS", 1460), ("SAckOK", b""), ("WScale", 7)]
    hs = t.handshake(options=ws)
    steps = [*hs, t.c("PA", data=b"x" * 1000, win=502), t.c("PA", data=b"y" * 1000, win=502)]
    sack = [("NOP", None), ("NOP", None), ("SAck", ((t.next["c"] - 1000) % 2**32,
                                                     t.next["c"] % 2**32))]
    steps += [t.s("A", dack=-2000, options=sack), t.s("A"),
              t.s("PA", data=b"z" * 1200, win=300), t.c("A", win=300)]
    add("window-scale-sack", steps)
    t = Tcp(family, next(ports))
    add("out-of-window-data", [*t.handshake(), *t.data("c"),
                               t.c("PA", data=b"x", dseq=3_000_000),
                               t.s("PA", data=b"x", dseq=-3_000_000),
                               t.c("A", dack=500_000, what="tcp c:A acks-unseen"),
                               *t.data("s")])
    t = Tcp(family, next(ports))
    add("old-retransmission", [*t.handshake(), *t.data("c", 1400), *t.data("c", 1400),
                               t.c("PA", data=b"r" * 100, dseq=-200_000, what="tcp c:old-retx"),
                               *t.data("s")])
    for who in ("c", "s"):
        t = Tcp(family, next(ports))
        add(f"rst-exact-{who}", [*t.handshake(), *t.data("c"), t.pkt(who, "R"),
                                 t.c("PA", data=b"after", what="tcp c:data-after-rst")])
        t = Tcp(family, next(ports))
        add(f"rst-in-window-{who}", [*t.handshake(), *t.data("c"),
                                     t.pkt(who, "R", dseq=3000, what=f"tcp {who}:R in-window"),
                                     *t.data("c"),
                                     t.pkt(who, "RA", what=f"tcp {who}:RA exact")])
        t = Tcp(family, next(ports))
        add(f"rst-blind-{who}", [*t.handshake(), *t.data("s"),
                                 t.pkt(who, "R", dseq=50_000_000, what=f"tcp {who}:R blind"),
                                 t.pkt(who, "R", seq=0, what=f"tcp {who}:R seq0"),
                                 *t.data("c")])
    t = Tcp(family, next(ports))
    add("refused", [t.c("S"), t.s("RA", seq=0), t.c("S", dseq=-1)])
    t = Tcp(family, next(ports))
    add("pickup-ack", [t.c("PA", data=b"mid"), t.s("A"), *t.data("s"), *t.data("c"), *t.close()])
    t = Tcp(family, next(ports))
    add("pickup-from-server", [t.s("PA", data=b"mid"), t.c("A"), *t.data("c")])
    t = Tcp(family, next(ports))
    add("pickup-fin", [t.c("FA"), t.c("R"), t.c("SA")])
    t = Tcp(family, next(ports))
    steps = [*t.handshake(), *t.data("c"), *t.close("c")]
    t.next["c"] += 100_000
    add("reopen-after-time-wait", [*steps, *t.handshake(), *t.data("c")])
    t = Tcp(family, next(ports))
    steps = [*t.handshake(), *t.data("c"), t.c("R")]
    t.next["c"] += 100_000
    add("reopen-after-own-rst", [*steps, *t.handshake(), *t.data("s")])
    t = Tcp(family, next(ports))
    steps = [*t.handshake(), *t.data("c"), t.s("R")]
    t.next["c"] += 100_000
    t.next["s"] += 100_000
    add("reopen-after-peer-rst", [*steps, *t.handshake(), *t.data("s")])
    t = Tcp(family, next(ports))
    add("bad-flags", [t.c("S"), t.c("SF", what="tcp c:SF"), t.s("SA"), t.c("A"),
                      t.c("F", what="tcp c:F-no-ack"), t.c("", what="tcp c:no-flags"),
                      t.c("FSRPAU", what="tcp c:xmas"), t.s("RU", what="tcp s:RU"),
                      *t.data("c")])
    t = Tcp(family, next(ports))
    add("data-before-handshake", [t.c("S"), t.c("PA", data=b"early", advance=False), t.s("A"),
                                  t.c("FA", advance=False), t.s("SA"), t.c("A")])
    t = Tcp(family, next(ports))
    add("challenge-ack-in-last-ack", [*t.handshake(), *t.data("c"), t.c("FA"), t.s("FA"),
                                      t.c("S", seq=90_000, advance=False), t.s("A", ack=90_000),
                                      t.c("A")])

    p = next(ports)
    add("udp-one-shot", [udp(family, "c", p), udp(family, "s", p), udp(family, "c", p)])
    p = next(ports)
    later = udp(family, "c", p)
    later.sleep = 2.2  # past the kernel's 2 s: a stream
    add("udp-stream", [udp(family, "c", p), udp(family, "s", p), later, udp(family, "s", p)])
    p = next(ports)
    add("udp-reply-first", [udp(family, "s", p), udp(family, "c", p)])

    ident = next(ports)
    add("echo", [echo(family, "c", ident), echo(family, "s", ident, reply=True),
                 echo(family, "s", ident + 1, reply=True)])

    c, s = ADDR[family]
    p = next(ports)
    req = udp(family, "c", p)
    rep = udp(family, "s", p)
    q, r = req.packet, rep.packet
    add("icmp-errors-udp", [
        req, rep,
        icmp_error(q, s, c, "s", "right: server->client quoting client's"),
        icmp_error(q, OTHER_S[family], c, "s", "right: router->client quoting client's"),
        icmp_error(r, c, s, "c", "right: client->server quoting server's"),
        icmp_error(q, c, s, "c", "wrong: towards quoted dst"),
        icmp_error(q, s, OTHER_C[family], "s", "wrong: to a third host"),
        icmp_error(r, OTHER_S[family], s, "s", "wrong: from beyond the quoted src"),
        icmp_error(udp(family, "c", p + 500).packet, s, c, "s", "unknown flow"),
    ])
    t = Tcp(family, next(ports))
    syn = t.c("S")
    add("icmp-errors-tcp", [syn, icmp_error(syn.packet, OTHER_S[family], c, "s", "ttl: router", "ttl"),
                            t.s("SA"), t.c("A"),
                            icmp_error(t.c("PA", data=b"big" * 300).packet, OTHER_S[family], c,
                                       "s", "toobig: router", "toobig"),
                            icmp_error(syn.packet, OTHER_C[family], s, "c", "ttl: wrong way",
                                       "ttl")])
    ident = next(ports)
    er = echo(family, "c", ident)
    add("icmp-error-quoting-echo", [er, icmp_error(er.packet, s, c, "s", "quoting echo"),
                                    icmp_error(er.packet, c, s, "c", "quoting echo wrong way")])

    # fragments of one UDP datagram (the kernel reassembles before conntrack)
    data = bytes(range(256)) * 2
    for name, cuts, order in (
            ("in-order", [(0, 200), (200, 400), (400, 520)], None),
            ("out-of-order", [(0, 200), (200, 400), (400, 520)], [2, 0, 1]),
            ("overlapping", [(0, 208), (200, 400), (400, 520)], None),
            ("tiny", [(0, 8), (8, 16), (16, 520)], None),
            ("never-completed", [(0, 200), (200, 400), (400, 520)], [0, 1]),
            ("duplicate", [(0, 200), (200, 400), (400, 520)], [0, 0, 1, 2])):
        p = next(ports)
        frag = fragments(family, "c", p, data, cuts, order, ident=p, what=f"frag {name}")
        add(f"fragments-{name}", [*frag, udp(family, "s", p, what="udp s:after-frags")])

    # bad checksums (the kernel's nf_conntrack_checksum): invalid, and they change nothing
    t = Tcp(family, next(ports))
    add("bad-checksum-tcp", [bad_checksum(t.c("S", advance=False)), *t.handshake(),
                             *t.data("c"), bad_checksum(t.s("R", dseq=10)),
                             bad_checksum(t.s("R")), *t.data("s"),
                             bad_checksum(t.c("PA", data=b"x", advance=False)), *t.close()])
    p = next(ports)
    add("bad-checksum-udp", [bad_checksum(udp(family, "c", p)), udp(family, "c", p),
                             bad_checksum(udp(family, "s", p)), udp(family, "s", p)])
    p = next(ports)
    add("udplite-checksums", [udplite(family, "c", p, pseudo_proto=136), udplite(family, "c", p),
                              udplite(family, "s", p, pseudo_proto=136), udplite(family, "s", p)])
    ident = next(ports)
    er = echo(family, "c", ident)
    add("bad-checksum-icmp", [bad_checksum(er), er,
                              bad_checksum(icmp_error(er.packet, s, c, "s", "quoting echo")),
                              bad_checksum(echo(family, "s", ident, reply=True)),
                              echo(family, "s", ident, reply=True)])
    return seqs


# --- random sequences --------------------------------------------------------------------
FLAGS = ["S", "SA", "A", "PA", "FA", "R", "RA", "F", "", "SF", "SR", "FPU", "AU", "SU", "RAU"]


def random_sequence(rng: random.Random, family: int, port: int, index: int) -> Sequence:
    """A perturbed conversation: mostly plausible TCP (the kernel's and fwd's decisions differ
    only at the edges), some UDP and ICMP, sequence numbers and flags sometimes off."""
    kind = rng.random()
    if kind < 0.75:
        t = Tcp(family, port, cisn=rng.randrange(2**32), sisn=rng.randrange(2**32))
        steps: list[Step] = []
        plausible = [("c", "S"), ("s", "SA"), ("c", "A")]
        if rng.random() < 0.2:  # pickup
            plausible = [("c", "PA")]
        for _ in range(rng.randrange(3, 12)):
            if plausible:
                side, flags = plausible.pop(0)
            else:
                side = rng.choice("cs")
                flags = rng.choice(["A", "PA", "PA", "FA", "R", "RA", "S", "SA"])
            if rng.random() < 0.1:
                flags = rng.choice(FLAGS)
            kw = {}
            r = rng.random()
            if r < 0.07:
                kw["dseq"] = rng.choice([1, -1, 1000, -1000, 70_000, -70_000, 2**31])
            elif r < 0.1:
                kw["dack"] = rng.choice([1, -1, 1000, 70_000, -70_000])
            elif r < 0.12:
                kw["seq"] = rng.randrange(2**32)
            data = b"p" * rng.choice([0, 1, 100, 1400]) if "P" in flags or rng.random() < 0.1 \
                else b""
            options = ()
            if "S" in flags and rng.random() < 0.5:
                options = [("MSS", 1460), ("SAckOK", b""), ("WScale", rng.randrange(15))]
            win = rng.choice([64240, 502, 0, 65535, 1])
            steps.append(t.pkt(side, flags, data=data, options=options, win=win, **kw))
        return Sequence(f"random-tcp-{index}/v{family}", steps)
    if kind < 0.87:
        steps = [udp(family, rng.choice("cs"), port) for _ in range(rng.randrange(1, 5))]
        return Sequence(f"random-udp-{index}/v{family}", steps)
    c, s = ADDR[family]
    steps = [echo(family, "c", port)]
    for _ in range(rng.randrange(1, 4)):
        r = rng.random()
        if r < 0.4:
            steps.append(echo(family, rng.choice("cs"), port, reply=rng.random() < 0.6))
        else:
            q = rng.choice([steps[0].packet, udp(family, "c", port).packet])
            src, dst, side = rng.choice([(s, c, "s"), (OTHER_S[family], c, "s"), (c, s, "c"),
                                         (s, OTHER_C[family], "s"), (OTHER_C[family], s, "c")])
            steps.append(icmp_error(q, src, dst, side, "random"))
    return Sequence(f"random-icmp-{index}/v{family}", steps)


def random_sequences(seed: int, count: int, port0: int, first: int = 0) -> list[Sequence]:
    """`count` random sequences named from `first` on (a batch of a longer run)."""
    rng = random.Random(seed)
    return [random_sequence(rng, rng.choice((4, 6)), port0 + i, first + i) for i in range(count)]
