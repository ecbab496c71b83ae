"""The reassembly of fragments in front of the queue: its limits and its counters.

fwd decides on whole datagrams: the raw-table rules it installs (fwd.rules) have the kernel's
conntrack defrag reassemble every fragmented datagram before the queue.  That reassembly is the
kernel's, so are its bounds, per network namespace: memory (a high threshold, above which new
fragment queues are refused until the kernel has evicted down to the low one) and time (a
datagram not complete by then is dropped).  This module owns fwd's side of it:

- `apply()` writes [fragments] memory and timeout into the namespace's sysctls, for IPv4
  (net.ipv4.ipfrag_*) and for the IPv6 conntrack defrag (net.netfilter.nf_conntrack_frag6_*),
  at start and at every reload (a reload that fails afterwards puts the old values back with
  `restore()`); keys left out leave the kernel's values (4 MiB; 30 s for IPv4, 60 s for IPv6).
  The low threshold follows the high one at the kernel's ratio, 3/4.
- `read()` gives the namespace's counters and current limits for the metrics and `fwd ctl
  stats`: /proc/net/snmp (Ip: ReasmOKs, ReasmFails, ReasmTimeout), /proc/net/snmp6
  (Ip6ReasmFails, Ip6ReasmTimeout: the IPv6 conntrack defrag counts only its failures), and the
  IPv4 fragment memory in use from /proc/net/sockstat (the kernel shows none for the IPv6
  conntrack defrag).  They are the namespace's: reassembly for the host itself counts there too.

Every fragment that goes wrong (overlap, bad length, over the memory bound, too late) is dropped
by the kernel and counted there as a failure; one that still reaches the queue is `invalid`
(counter invalid_fragment) and gets the policy's verdict for invalid packets.
"""

from __future__ import annotations

import contextlib
import os

from fwd.config import ConfigError, FragmentsConfig

SYSCTL = "/proc/sys"
# /proc/self/net: /proc/net links there, and the unit's ProcSubset=pid hides /proc/net.
PROC_NET = "/proc/self/net"
FAMILIES = ("ipv4", "ipv6")
# family -> (high threshold, low threshold, timeout) sysctls, relative to SYSCTL.
LIMITS = {
    "ipv4": ("net/ipv4/ipfrag_high_thresh", "net/ipv4/ipfrag_low_thresh", "net/ipv4/ipfrag_time"),
    "ipv6": ("net/netfilter/nf_conntrack_frag6_high_thresh",
             "net/netfilter/nf_conntrack_frag6_low_thresh",
             "net/netfilter/nf_conntrack_frag6_timeout"),
}
# Counters read, family -> {our name: the kernel's field}.
COUNTERS = {
    "ipv4": {"reassembled": "ReasmOKs", "failed": "ReasmFails", "timed_out": "ReasmTimeout"},
    "ipv6": {"failed": "Ip6ReasmFails", "timed_out": "Ip6ReasmTimeout"},
}


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except FileNotFoundError:
        return None


Limits = dict[str, tuple[int, int, int]]  # family -> (high threshold, low threshold, timeout)


def current() -> Limits:
    """The namespace's limits now, for every family whose defrag is loaded (its sysctls exist:
    nothing is reassembled here for a family without them)."""
    out = {}
    for family, paths in LIMITS.items():
        values = [_read(os.path.join(SYSCTL, p)) for p in paths]
        if None not in values:
            out[family] = tuple(int(v) for v in values)
    return out


def restore(limits: Limits) -> None:
    """Write `limits` (as current() gave them) back."""
    for family, (high, low, timeout) in limits.items():
        high_path, low_path, time_path = LIMITS[family]
        # The kernel keeps low <= high at every write: raise high first when it grows past the
        # current low, lower low first otherwise.
        first = [(high_path, high), (low_path, low)]
        if high < int(_read(os.path.join(SYSCTL, low_path)) or 0):
            first.reverse()
        for rel, value in (*first, (time_path, timeout)):
            with open(os.path.join(SYSCTL, rel), "w", encoding="ascii") as f:
                f.write(f"{value}\n")


def apply(cfg: FragmentsConfig) -> Limits:
    """Set the namespace's reassembly limits as `cfg` says (a key that is None keeps the value
    there is); returns the limits before, for restore().  Raises ConfigError naming the key when
    the kernel refuses (e.g. /proc/sys read-only), with nothing changed."""
    before = current()
    wanted = {family: (high if cfg.memory is None else cfg.memory,
                       low if cfg.memory is None else cfg.memory * 3 // 4,
                       timeout if cfg.timeout is None else cfg.timeout)
              for family, (high, low, timeout) in before.items()}
    if wanted == before:
        return before
    try:
        restore(wanted)
    except OSError as err:
        with contextlib.suppress(OSError):
            restore(before)
        timeouts = {os.path.join(SYSCTL, paths[2]) for paths in LIMITS.values()}
        key = "fragments.timeout" if err.filename in timeouts else "fragments.memory"
        raise ConfigError(key, f"cannot set {err.filename or SYSCTL}: {err.strerror or err}") \
            from None
    return before


def _snmp(text: str, prefix: str) -> dict[str, int]:
    """The "PREFIX: names" / "PREFIX: values" line pair of /proc/net/snmp as a dict."""
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith(prefix + ":")]
    return dict(zip(rows[0], map(int, rows[1]))) if len(rows) == 2 else {}


def read() -> dict[str, dict[str, int]]:
    """{family: counters of COUNTERS, "memory" (bytes in use, IPv4 only), "memory_limit",
    "timeout" (seconds)}; a family whose reassembly is not loaded has no limits."""
    snmp = {"ipv4": _snmp(_read(f"{PROC_NET}/snmp") or "", "Ip"),
            "ipv6": dict((k, int(v)) for k, v in (line.split() for line in
                                                  (_read(f"{PROC_NET}/snmp6") or "").splitlines()
                                                  if line.strip()))}
    limits = current()
    out: dict[str, dict[str, int]] = {}
    for family in FAMILIES:
        out[family] = {name: snmp[family].get(field, 0) for name, field in COUNTERS[family].items()}
        if family in limits:
            out[family]["memory_limit"], _low, out[family]["timeout"] = limits[family]
    for line in (_read(f"{PROC_NET}/sockstat") or "").splitlines():
        words = line.split()
        if words[:1] == ["FRAG:"] and "memory" in words:
            out["ipv4"]["memory"] = int(words[words.index("memory") + 1])
    return out
