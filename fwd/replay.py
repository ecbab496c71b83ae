"""`fwd replay`: run the engine offline over a pcap/pcapng capture.

Each frame loses its link layer (Ethernet with VLAN tags, Linux cooked SLL/SLL2 as written by
`tcpdump -i any`, raw IP); non-IP frames (ARP, ...) are skipped and counted.  The IP packets go
to the engine in batches with the capture's timestamps as the clock, and the GC runs as that
clock advances, so the verdicts and states are those a daemon with the same config would have
given.  Interfaces are unknown offline: a rule naming one never matches.  The config's protocol
helpers (helpers.d next to it) read the signalling as the daemon's would; every expectation they
create is recorded, and each RELATED packet is shown with the expectation it matched.
Fragments are reassembled first (fwd.defrag), as the kernel does in front of the daemon's queue:
a datagram is decided once, at the frame of the fragment that completes it.
Checksums are verified only with --checksums: a capture taken on a sending host (or on one whose
NIC offloads checksums) holds checksums not yet filled in, which the daemon, told so by the
kernel, never checks; a capture from the wire between hosts can be verified as the daemon would.

Frames the daemon would never see are reported apart, not decided: the outgoing copy of a
packet in a `tcpdump -i any` capture (the hook saw it once, on the way in), and, with --local
naming the firewall's own addresses, packets to or from it when queue.hooks does not queue
INPUT or OUTPUT.  Long captures show progress on stderr.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator

from scapy.error import Scapy_Exception

from fwd.defrag import Reassembler
from scapy.utils import RawPcapNgReader, RawPcapReader

from fwd import _core, config, engine

EXIT_CAPTURE = 2  # the capture cannot be read
PROGRESS_INTERVAL = 5.0  # seconds between progress lines on stderr

# One engine call takes packets captured within BATCH_WINDOW seconds of the first, at most
# BATCH_MAX of them, and decides them all at the clock of the latest.
BATCH_MAX = 256
BATCH_WINDOW = 0.001

# Link types (tcpdump.org/linktypes.html) and the EtherTypes that carry IP.
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = (101, 12, 14)  # LINKTYPE_RAW, and DLT_RAW as some systems number it
LINKTYPE_IPV4, LINKTYPE_IPV6 = 228, 229
LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2 = 113, 276
ETHERTYPE_IP = (0x0800, 0x86DD)
ETHERTYPE_VLAN = (0x8100, 0x88A8, 0x9100)  # 802.1Q, 802.1ad and the old QinQ tag
PACKET_OUTGOING = 4  # the SLL/SLL2 packet type of a frame captured on its way out

PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}
TCP_FLAGS = "FSRPAUEC"  # bit 0 upwards, as tcpdump abbreviates them
ICMP_ECHO = {1: (0, 8), 58: (128, 129)}  # echo reply/request types per protocol


class CaptureError(Exception):
    """The capture cannot be read or holds frames of an unsupported link type."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("capture", metavar="FILE", help="pcap or pcapng capture")
    parser.add_argument("--config", default=config.DEFAULT_PATH,
                        help=f"configuration file (TOML); default {config.DEFAULT_PATH}")
    parser.add_argument("--json", action="store_true",
                        help="JSON Lines: one object per IP packet, then a summary object")
    parser.add_argument("--checksums", action="store_true",
                        help="verify TCP/UDP/ICMP checksums (conntrack.checksum): a bad one is "
                             "invalid.  Only for captures from the wire: a sender's own capture "
                             "has checksums its NIC fills in later")
    parser.add_argument("--summary", action="store_true",
                        help="only the summary: counts, final connections, expectations")
    parser.add_argument("--drops-only", action="store_true",
                        help="of the packets, show only those dropped")
    parser.add_argument("--local", action="append", default=[], metavar="ADDR",
                        type=ipaddress.ip_address,
                        help="an address of the firewall itself (repeatable): packets to or "
                             "from it pass INPUT/OUTPUT, not FORWARD")


# --- reading the capture --------------------------------------------------------------------

def read_frames(path: str) -> Iterator[tuple[float | None, int, bytes]]:
    """(timestamp or None, link type, frame bytes) for every frame of a pcap/pcapng file."""
    try:
        reader = RawPcapReader(path)  # falls back to RawPcapNgReader by the file's magic
    except (OSError, Scapy_Exception) as err:
        raise CaptureError(f"cannot read capture: {err}") from None
    with reader:
        for data, meta in reader:
            if isinstance(reader, RawPcapNgReader):
                # Simple packet blocks carry no timestamp.
                ts = (None if meta.tshigh is None
                      else ((meta.tshigh << 32) | meta.tslow) / meta.tsresol)
                yield ts, meta.linktype, data
            else:
                yield meta.sec + meta.usec / (1e9 if reader.nano else 1e6), reader.linktype, data


def l3_packet(linktype: int, frame: bytes) -> bytes | None:
    """The IPv4/IPv6 packet a frame carries, or None when it carries none (ARP, ...)."""
    if linktype == LINKTYPE_ETHERNET:
        offset, type_at = 14, 12
        while len(frame) >= offset and _u16(frame, type_at) in ETHERTYPE_VLAN:
            offset, type_at = offset + 4, type_at + 4
    elif linktype == LINKTYPE_LINUX_SLL:
        offset, type_at = 16, 14
    elif linktype == LINKTYPE_LINUX_SLL2:
        offset, type_at = 20, 0
    elif linktype in LINKTYPE_RAW or linktype in (LINKTYPE_IPV4, LINKTYPE_IPV6):
        return frame if frame and frame[0] >> 4 in (4, 6) else None
    else:
        raise CaptureError(f"unsupported link type {linktype}")
    if len(frame) < offset or _u16(frame, type_at) not in ETHERTYPE_IP:
        return None
    return frame[offset:]


def outgoing(linktype: int, frame: bytes) -> bool:
    """Whether a Linux cooked frame was captured on its way out (`tcpdump -i any` records a
    forwarded packet twice: in on one interface, out on another)."""
    if linktype == LINKTYPE_LINUX_SLL:
        return len(frame) >= 2 and _u16(frame, 0) == PACKET_OUTGOING
    if linktype == LINKTYPE_LINUX_SLL2:
        return len(frame) >= 11 and frame[10] == PACKET_OUTGOING
    return False


def _u16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 2], "big")


# --- a short description of an IP packet ----------------------------------------------------

@dataclass(frozen=True)
class PacketInfo:
    """Addresses and ports of an IP packet, as far as the captured bytes show them."""

    proto: int                          # IP protocol (for IPv6 the first next-header)
    src: str
    dst: str
    sport: int | None = None            # tcp/udp
    dport: int | None = None
    flags: str = ""                     # tcp flags, e.g. "S", "SA"
    icmp: tuple[int, int | None] | None = None  # icmp/icmpv6 (type, code; None if quoted)
    echo_id: int | None = None          # icmp/icmpv6 echo
    inner: "PacketInfo | None" = None   # the packet an ICMP error quotes

    def __str__(self) -> str:
        name = PROTO_NAMES.get(self.proto, f"proto {self.proto}")
        if self.sport is not None:
            text = f"{name} {_endpoint(self.src, self.sport)} > {_endpoint(self.dst, self.dport)}"
            return f"{text} {self.flags}" if self.flags else text
        text = f"{name} {self.src} > {self.dst}"
        if self.icmp:
            text += f" type {self.icmp[0]}"
            if self.icmp[1] is not None:
                text += f" code {self.icmp[1]}"
        if self.echo_id is not None:
            text += f" id {self.echo_id}"
        if self.inner:
            text += f" [{self.inner}]"
        return text


def parse_packet(l3: bytes) -> PacketInfo | None:
    """What the engine's own parser makes of a packet (so replay shows what fwd saw); None if
    not even its IP header parsed."""
    p = _core.parse_packet(l3)
    if "tuple" not in p:
        return None
    return _info(p["tuple"], l3, p)


def _info(t: dict, l3: bytes, p: dict | None) -> PacketInfo:
    """PacketInfo of a parsed tuple; `p` (the parse of l3) is None for a quoted packet, whose
    tuple is all there is of it."""
    proto, src, dst = t["proto"], t["src"], t["dst"]
    if p is not None and "l4off" not in p:  # invalid: only addresses are sure
        return PacketInfo(proto, src, dst)
    if proto in (6, 17):
        bits = (p or {}).get("tcp_flags", 0)
        flags = "".join(f for bit, f in enumerate(TCP_FLAGS) if bits >> bit & 1)
        return PacketInfo(proto, src, dst, t["sport"], t["dport"], flags)
    if proto in ICMP_ECHO:
        kind = t["dport"]  # the engine keeps an ICMP message's type there, an echo's id in sport
        code = l3[p["l4off"] + 1] if p else None
        return PacketInfo(proto, src, dst, icmp=(kind, code),
                          echo_id=t["sport"] if kind in ICMP_ECHO[proto] else None,
                          inner=_info(p["inner"], l3, None) if p and "inner" in p else None)
    return PacketInfo(proto, src, dst)


def summarize(l3: bytes) -> str:
    info = parse_packet(l3)
    return str(info) if info else f"truncated ({len(l3)} bytes)"


def _endpoint(addr: str, port: int | None) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


# --- running the engine ---------------------------------------------------------------------

@dataclass
class Decision:
    index: int        # position of the frame in the capture (0-based, skipped frames count)
    l3: bytes
    verdict: str      # "accept" | "drop"
    state: str        # one of _core.STATE_NAMES
    rule: str | None  # name of the matching rule, None for the default verdict
    exp_id: int       # journal id of the expectation a RELATED packet matched, 0 if none
    not_queued: str | None = None  # why the daemon would never see it (then not decided)


class Replayer:
    """Feeds frames to an engine; counts what it did; `now` is the clock of the last batch."""

    def __init__(self, eng: _core.Engine, rule_names: list[str], cfg: config.Config,
                 local: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
                 checksums: bool = False) -> None:
        self.engine = eng
        self.flags = _core.IN_CSUM if checksums else 0  # as NFQUEUE's CSUM_NOTVERIFIED
        self.hooks = cfg.queue.hooks
        self.local = {a.packed for a in local}
        self.not_queued: Counter[str] = Counter()  # frames the daemon would never see, by why
        self.frames = 0
        self.rule_names = rule_names
        self.gc_interval = cfg.conntrack.gc_interval
        self.gc_budget = cfg.conntrack.buckets  # a GC pass offline sweeps the whole table
        self.next_gc: float | None = None
        self.now = 0.0
        self.packets = self.accepted = self.dropped = self.skipped = 0
        self.defrag = Reassembler()  # the kernel's reassembly, which the daemon has in front
        self.journal: dict[int, dict] = {}  # expectations created so far, by id

    def run(self, frames: Iterable[tuple[float | None, int, bytes]]) -> Iterator[Decision]:
        batch: list[tuple[int, bytes]] = []
        start = clock = 0.0  # capture time of the batch's first packet, latest time seen
        for index, (ts, linktype, frame) in enumerate(frames):
            self.frames += 1
            l3 = l3_packet(linktype, frame)
            if l3 is None:
                self.skipped += 1
                continue
            why = "outgoing copy" if outgoing(linktype, frame) else self._local_hook(l3)
            if why:
                self.not_queued[why] += 1
                yield Decision(index, l3, "-", "-", None, 0, why)
                continue
            # Frames of several interfaces may be slightly out of order: the clock never goes back.
            t = clock if ts is None else max(clock, ts)
            l3 = self.defrag.push(l3, t)
            if l3 is None:  # a fragment held for reassembly, or discarded as the kernel would
                continue
            if batch and (len(batch) >= BATCH_MAX or t - start > BATCH_WINDOW):
                yield from self._decide(batch, clock)
                batch = []
            clock = t
            if not batch:
                start = clock
            batch.append((index, l3))
        if batch:
            yield from self._decide(batch, clock)

    def _decide(self, batch: list[tuple[int, bytes]], now: float) -> Iterator[Decision]:
        self._gc(now)
        self.now = now
        results = self.engine.process([(l3, 0, 0, self.flags) for _index, l3 in batch], now,
                                      detail=True)
        for (index, l3), (verdict, _mark, state, rule, exp_id) in zip(batch, results):
            accepted = verdict == _core.VERDICT_ACCEPT
            self.packets += 1
            self.accepted += accepted
            self.dropped += not accepted
            yield Decision(index, l3, _core.VERDICT_NAMES[verdict], _core.STATE_NAMES[state],
                           self.rule_names[rule] if rule >= 0 else None, exp_id)

    def _local_hook(self, l3: bytes) -> str | None:
        """Why a packet to or from the firewall itself is not queued (its hook is not in
        queue.hooks), or None."""
        if not self.local:
            return None
        src, dst = (l3[12:16], l3[16:20]) if l3[0] >> 4 == 4 else (l3[8:24], l3[24:40])
        hook = "INPUT" if dst in self.local else "OUTPUT" if src in self.local else None
        return None if hook is None or hook in self.hooks else f"{hook}, not in queue.hooks"

    def _gc(self, now: float) -> None:
        """Run a GC pass whenever the capture clock crosses a gc_interval, as the daemon would."""
        if self.next_gc is not None and now < self.next_gc:
            return
        if self.next_gc is not None:
            self.engine.gc(now, self.gc_budget)
        self.next_gc = now + self.gc_interval

    def expectation(self, exp_id: int) -> dict | None:
        """What expectation `exp_id` was (helper, class, proto, family, src, dst, sport, dport,
        flags, id; None where wildcarded), or None for 0."""
        if exp_id and exp_id not in self.journal:  # a new one: the journal only grows
            self.journal = {x["id"]: {k: v for k, v in x.items() if k != "end"}
                            for x in self.engine.expectations_created()}
        return self.journal.get(exp_id)

    def connections(self) -> list[dict]:
        """The final table, each connection as proto (name), src, dst, sport, dport, state."""
        return [{"proto": PROTO_NAMES.get(c["proto"], str(c["proto"])), "src": c["src"],
                 "dst": c["dst"], "sport": c["sport"], "dport": c["dport"], "state": c["state"]}
                for c in self.engine.connections(self.now)]


# --- command ----------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> int:
    try:
        cfg = config.load(args.config)
        eng = engine.create_engine(cfg)
        eng.expect_journal(True)
        # Packets are replayed without interfaces (index 0): a rule naming one matches none.
        rule_names = engine.configure(eng, cfg)
    except config.ConfigError as err:
        print(f"fwd replay: config error: {err}", file=sys.stderr)
        return config.EXIT_CONFIG
    replayer = Replayer(eng, rule_names, cfg, args.local, checksums=args.checksums)
    progress_at = time.monotonic() + PROGRESS_INTERVAL
    try:
        for d in replayer.run(read_frames(args.capture)):
            if time.monotonic() >= progress_at:
                print(f"fwd replay: {replayer.frames} frames read, {replayer.packets} packets "
                      f"decided ...", file=sys.stderr, flush=True)
                progress_at = time.monotonic() + PROGRESS_INTERVAL
            if args.summary or (args.drops_only and d.verdict != "drop"):
                continue
            _show(replayer, d, args.json)
    except CaptureError as err:
        print(f"fwd replay: {args.capture}: {err}", file=sys.stderr)
        return EXIT_CAPTURE
    conns = replayer.connections()
    # Each with how it ended: "matched", "expired", "flushed", "evicted" or still "live".
    created = eng.expectations_created()
    if args.json:
        print(json.dumps({"summary": True, "packets": replayer.packets,
                          "accepted": replayer.accepted, "dropped": replayer.dropped,
                          "skipped": replayer.skipped,
                          "bad_checksums": eng.stats()["ct"]["invalid_checksum"],
                          "fragments": dict(replayer.defrag.stats),
                          "not_queued": dict(replayer.not_queued), "connections": conns,
                          "expectations_created": created}))
        return 0
    print(f"{replayer.packets} packets: {replayer.accepted} accepted, {replayer.dropped} dropped;"
          f" {replayer.skipped} non-IP frames skipped")
    if args.checksums:
        print(f"{eng.stats()['ct']['invalid_checksum']} bad checksums (invalid)")
    if replayer.defrag.stats:
        print("fragments: " + ", ".join(f"{n} {what}"
                                        for what, n in sorted(replayer.defrag.stats.items())))
    if replayer.not_queued:
        print(f"{sum(replayer.not_queued.values())} packets fwd would never see (not decided): "
              + ", ".join(f"{n} {why}" for why, n in sorted(replayer.not_queued.items())))
    print(f"{len(conns)} connections at the end of the capture:")
    for c in conns:
        if c["proto"] in ("icmp", "icmpv6"):  # the engine gives the echo id and type as ports
            flow = f"{c['src']} -> {c['dst']} id {c['sport']} type {c['dport']}"
        else:
            flow = f"{_endpoint(c['src'], c['sport'])} -> {_endpoint(c['dst'], c['dport'])}"
        print(f"  {c['proto']:6s} {flow} {c['state']}")
    print(f"{len(created)} expectations created:")
    for x in created:
        print(f"  {_describe(x)} {x['end']}")
    return 0


def _show(replayer: Replayer, d: Decision, as_json: bool) -> None:
    """One packet's line: its decision, or why fwd would not see it."""
    if d.not_queued:
        print(json.dumps({"index": d.index, "not_queued": d.not_queued}) if as_json else
              f"{d.index:6d} (not queued: {d.not_queued}) {summarize(d.l3)}")
        return
    # A RELATED packet names what let it in: an expectation (and its helper), or none (an
    # ICMP error about a tracked connection).
    exp = replayer.expectation(d.exp_id) if d.state == "related" else None
    if as_json:
        record = {"index": d.index, "verdict": d.verdict, "state": d.state, "rule": d.rule}
        if d.state == "related":
            record.update(helper=exp and exp["helper"], expectation=exp)
        print(json.dumps(record))
    else:
        via = f" (via {_describe(exp)})" if exp else ""
        print(f"{d.index:6d} {d.verdict:6s} {d.state:11s} {d.rule or '(default)':16s} "
              f"{summarize(d.l3)}{via}")


def _describe(x: dict) -> str:
    """An expectation in one line, e.g. "#3 sip audio udp 10.0.0.1:* -> 10.0.0.2:6000"."""
    src = "*" if x["src"] is None else x["src"]
    sport = "*" if x["sport"] is None else x["sport"]
    flags = f" [{','.join(x['flags'])}]" if x["flags"] else ""
    return (f"#{x['id']} {x['helper']} {x['class']} {x['proto']} {_endpoint(src, sport)} -> "
            f"{_endpoint(x['dst'], x['dport'])}{flags}")
