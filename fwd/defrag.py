"""IP reassembly in front of the engine, as the kernel's defrag (nf_defrag_ipv4/ipv6) does it.

The live daemon never sees fragments: the rules fwd installs (fwd/rules.py) have the kernel
reassemble every datagram before the queue and fragment it again on output, so the engine and
its helpers always get whole datagrams.  `fwd replay` and the differential harness have no
kernel in front of the engine, so they reassemble with this module, the way the kernel does
(measured on this kernel with tests/differential):

- a datagram passes when its last fragment arrives, whatever the order;
- an exact duplicate fragment is ignored; a fragment that overlaps another discards the whole
  datagram (RFC 5722, and the kernel does the same for IPv4);
- a non-last fragment whose length is not a multiple of 8, a datagram over 65535 bytes, or
  fragments that disagree about the end are discarded;
- incomplete datagrams are forgotten after `timeout` seconds (the kernel's ipfrag_time, 30 s,
  and nf_conntrack_frag6_timeout, 60 s), and the oldest ones go first when more than
  `max_bytes` are held (the kernel's 4 MiB high threshold).
Counters in `stats` say what happened to every fragment.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field

_EXT_HEADERS = (0, 43, 60, 51)  # hop-by-hop, routing, destination options, AH
_FRAGMENT = 44


@dataclass
class _Queue:
    first_at: float
    header: bytes | None = None            # the offset-0 fragment's headers (IPv6: up to the
    prev_nh_at: int = 0                    # fragment header, and where its next-header is)
    proto: int = 0
    parts: dict[int, bytes] = field(default_factory=dict)  # offset -> payload
    end: int | None = None                 # the datagram's length, once the last one came
    size: int = 0


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Reassembler:
    def __init__(self, timeout4: float = 30.0, timeout6: float = 60.0,
                 max_bytes: int = 4 << 20) -> None:
        self.timeout = {4: timeout4, 6: timeout6}
        self.max_bytes = max_bytes
        self.queues: dict[tuple, _Queue] = {}
        self.held = 0
        self.stats: Counter = Counter()

    def push(self, packet: bytes, now: float) -> bytes | None:
        """The packet itself if it is no fragment; the whole datagram if this fragment
        completes one; None while it is held, or when it was discarded."""
        self._expire(now)
        frag = self._parse(packet)
        if frag is None:
            return packet
        if frag == "bad":
            self.stats["malformed"] += 1
            return None
        key, family, offset, more, payload, header, prev_nh_at, proto = frag
        end = offset + len(payload)
        if (more and len(payload) % 8) or end > 65535 - len(header):
            self.stats["malformed"] += 1
            return None
        q = self.queues.get(key)
        if q is None:
            q = self.queues[key] = _Queue(first_at=now)
        if offset in q.parts and len(q.parts[offset]) == len(payload):
            self.stats["duplicate"] += 1
            return None
        if any(o < end and offset < o + len(p) for o, p in q.parts.items()) or \
                (not more and q.end is not None and q.end != end) or \
                (not more and any(o + len(p) > end for o, p in q.parts.items())) or \
                (q.end is not None and end > q.end):
            self.stats["overlap" if q.end is None or end <= q.end else "malformed"] += 1
            self._drop(key)
            return None
        q.parts[offset] = payload
        q.size += len(payload)
        self.held += len(payload)
        if not more:
            q.end = end
        if offset == 0:
            q.header, q.prev_nh_at, q.proto = header, prev_nh_at, proto
        self.stats["queued"] += 1
        whole = self._complete(key, q, family)
        if whole is None:
            self._limit()
        return whole

    def _complete(self, key: tuple, q: _Queue, family: int) -> bytes | None:
        if q.end is None or q.header is None:
            return None
        at, chunks = 0, []
        for offset in sorted(q.parts):
            if offset != at:
                return None
            chunks.append(q.parts[offset])
            at += len(q.parts[offset])
        if at != q.end:
            return None
        self._drop(key, counted=False)
        self.stats["reassembled"] += 1
        payload = b"".join(chunks)
        h = bytearray(q.header)
        if family == 4:
            struct.pack_into("!HH", h, 2, len(h) + len(payload), 0)
            struct.pack_into("!BBH", h, 8, h[8], h[9], 0)
            struct.pack_into("!H", h, 10, _checksum(bytes(h)))
        else:
            h[q.prev_nh_at] = q.proto
            struct.pack_into("!H", h, 4, len(h) - 40 + len(payload))
        return bytes(h) + payload

    def _parse(self, p: bytes):
        """None for no fragment, "bad" for an unreadable one, else its fields."""
        if len(p) >= 20 and p[0] >> 4 == 4:
            ihl, total = (p[0] & 0x0F) * 4, struct.unpack("!H", p[2:4])[0]
            flags_off = struct.unpack("!H", p[6:8])[0]
            if not flags_off & 0x3FFF:
                return None
            if ihl < 20 or total < ihl or total > len(p):
                return "bad"
            key = (4, p[12:20], p[4:6], p[9])
            return (key, 4, (flags_off & 0x1FFF) * 8, bool(flags_off & 0x2000), p[ihl:total],
                    p[:ihl], 0, p[9])
        if len(p) >= 40 and p[0] >> 4 == 6:
            nh, off, prev_nh_at = p[6], 40, 6
            while nh in _EXT_HEADERS and off + 8 <= len(p):
                size = (p[off + 1] + 2) * 4 if nh == 51 else (p[off + 1] + 1) * 8
                nh, prev_nh_at, off = p[off], off, off + size
            if nh != _FRAGMENT:
                return None
            end = 40 + struct.unpack("!H", p[4:6])[0]
            if off + 8 > len(p) or end > len(p) or end < off + 8:
                return "bad"
            offset_m = struct.unpack("!H", p[off + 2:off + 4])[0]
            ident = p[off + 4:off + 8]
            key = (6, p[8:40], ident)
            return (key, 6, offset_m & 0xFFF8, bool(offset_m & 1), p[off + 8:end], p[:off],
                    prev_nh_at, p[off])
        return None

    def _drop(self, key: tuple, counted: bool = True) -> None:
        q = self.queues.pop(key)
        self.held -= q.size
        if counted:
            self.stats["discarded_datagrams"] += 1

    def _expire(self, now: float) -> None:
        for key in [k for k, q in self.queues.items() if now - q.first_at > self.timeout[k[0]]]:
            self.stats["timeouts"] += 1
            self._drop(key, counted=False)

    def _limit(self) -> None:
        while self.held > self.max_bytes:
            oldest = min(self.queues, key=lambda k: self.queues[k].first_at)
            self.stats["memory"] += 1
            self._drop(oldest, counted=False)
