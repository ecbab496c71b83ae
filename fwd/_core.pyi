# Type stub and contract of the C extension fwd._core (built from csrc/*.c by setup.py).
# The binding (csrc/binding.c) is the only C file that includes Python.h.

from typing import Any, Sequence

# Verdicts.
VERDICT_DROP: int  # 0
VERDICT_ACCEPT: int  # 1

# Per-packet conntrack state, as the policy sees it.  A rule's state mask is a bit-or of
# (1 << STATE_x).
STATE_NEW: int  # 0
STATE_ESTABLISHED: int  # 1
STATE_RELATED: int  # 2
STATE_INVALID: int  # 3
STATE_UNTRACKED: int  # 4
STATE_NAMES: tuple[str, ...]  # ("new", "established", "related", "invalid", "untracked")

# A compiled policy rule, as passed to Engine.set_policy:
#   (state_mask, family, proto, src, src_plen, dst, dst_plen,
#    sport_lo, sport_hi, dport_lo, dport_hi, iif, oif, verdict, mark)
# state_mask  int, 0 = any state
# family      0 = any, 4 = IPv4, 6 = IPv6 (must be 4/6 when src/dst is given)
# proto       -1 = any, else the IP protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6, ...)
# src, dst    bytes of length 4 (family 4) or 16 (family 6), or None = any; *_plen the prefix length
# ports       inclusive ranges; 0..65535 = any (only checked for tcp/udp packets; a rule that
#             names ports matches no other protocol)
# iif, oif    interface index, 0 = any (a rule with an interface never matches a packet whose
#             interface is unknown, e.g. in replay)
# verdict     VERDICT_DROP / VERDICT_ACCEPT
# mark        -1 = leave the mark alone, else 0..0xffffffff
Rule = tuple[int, int, int, bytes | None, int, bytes | None, int, int, int, int, int, int, int, int, int]

# A packet handed to Engine.process: (l3_bytes, iif, oif); l3_bytes start at the IPv4/IPv6 header.
Packet = tuple[bytes, int, int]
# A result: (verdict, mark, state, rule_index)  mark -1 = unchanged; rule_index -1 = default verdict.
Result = tuple[int, int, int, int]

class Engine:
    def __init__(
        self,
        *,
        shards: int = 1024,        # lock shards, power of two
        buckets: int = 65536,      # hash buckets, power of two, >= shards
        max_entries: int = 262144, # table size cap (early drop beyond it)
        seed: int | None = None,   # hash seed; None = random per process
        timeouts: dict[str, float] | None = None,  # seconds; keys as in Engine.timeouts()
    ) -> None: ...
    def set_policy(self, rules: Sequence[Rule], default_verdict: int, default_mark: int = -1) -> None:
        """Swap the compiled policy atomically (between batches). Raises ValueError on a bad rule."""
    def process(self, packets: Sequence[Packet], now: float) -> list[Result]:
        """One batch: exactly one result per packet, in order. `now` is the caller's clock in
        seconds (monotonic in the daemon, capture time in replay). The GIL is released inside."""
    def gc(self, now: float, budget: int = 4096) -> int:
        """Incremental GC: scan up to `budget` buckets from a cursor, remove expired entries;
        returns how many were removed."""
    def connections(self, now: float) -> list[dict[str, Any]]:
        """Snapshot of the table: each dict has proto (int), family (4/6), src, dst (str),
        sport, dport (int; ICMP: id and type), reply_src, reply_dst, reply_sport, reply_dport,
        state (str: tcp state name like "ESTABLISHED", or "UNREPLIED"/"REPLIED" for udp/icmp/other),
        assured (bool), seen_reply (bool), timeout (float seconds left), packets_orig, packets_reply."""
    def stats(self) -> dict[str, Any]:
        """One snapshot: {"locks": {class: {"acquisitions", "contended", "wait_ns", "hold_ns", "count"}},
        "ct": {"found","new","invalid","insert","insert_failed","drop","early_drop","delete",...},
        "entries": int, "max_entries": int, "buckets": int, "shards": int, "verdicts": {...}}"""
    def flush(self) -> int: ...
    @staticmethod
    def timeouts_default() -> dict[str, float]: ...
