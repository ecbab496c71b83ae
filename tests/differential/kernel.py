"""The reference: the kernel's conntrack in a router namespace (client -- fw -- server).

The fw namespace forwards with the policy fwd's differential config also has (POLICY_TOML):
ESTABLISHED/RELATED and NEW pass, INVALID is dropped.  To read the state the kernel assigned
without a log, the mangle table writes it into the forwarded packet's DSCP (NEW=1,
ESTABLISHED=2, RELATED=3); a packet that never reaches the other side was dropped.

Each test packet is injected as a raw frame on one side and followed, on the same path, by a
barrier datagram that the fw namespace forwards untracked: whatever arrives on the far side
before the barrier is the outcome, so a drop costs no timeout.  The end hosts' own stacks are
silenced (INPUT/OUTPUT DROP) so they never answer the test packets.  Everything lives in
namespaces created here and is removed by close().
"""

from __future__ import annotations

import socket
import struct
import time

from fwd.netns import (CLIENT4, CLIENT6, CLIENT_IF, FW_IN_IF, FW_OUT_IF, SERVER4, SERVER6,
                       SERVER_IF, Topology, entered)

# Extra hosts beyond each side (wrong senders of ICMP errors and the like): the fw namespace
# reaches them through the static neighbour entries made here.
CLIENT_SIDE_HOSTS = {4: ["10.77.1.9"], 6: ["fd77:1::9"]}
SERVER_SIDE_HOSTS = {4: ["10.77.2.9"], 6: ["fd77:2::9"]}
ENDS = {("c", 4): CLIENT4, ("c", 6): CLIENT6, ("s", 4): SERVER4, ("s", 6): SERVER6}

STATE_OF_DSCP = {1: "new", 2: "established", 3: "related", 0: "untracked"}
BARRIER_PORT = 9  # udp 9 -> 9: forwarded untracked; test sequences never use it
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def _rules(cmd: str) -> list[list[str]]:
    dscp = [["-t", "mangle", "-A", "FORWARD", "-m", "conntrack", "--ctstate", state,
             "-j", "DSCP", "--set-dscp", str(value)]
            for state, value in (("NEW", 1), ("ESTABLISHED", 2), ("RELATED", 3))]
    barrier = ["-p", "udp", "--sport", str(BARRIER_PORT), "--dport", str(BARRIER_PORT)]
    return [[cmd, "-t", "raw", "-A", "PREROUTING", *barrier, "-j", "CT", "--notrack"],
            *[[cmd, *r] for r in dscp],
            [cmd, "-A", "FORWARD", *barrier, "-j", "ACCEPT"],
            [cmd, "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
             "-j", "ACCEPT"],
            [cmd, "-A", "FORWARD", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT"],
            [cmd, "-P", "FORWARD", "DROP"]]


def _mac(topo: Topology, ns: str, dev: str) -> bytes:
    out = topo.run(ns, ["cat", f"/sys/class/net/{dev}/address"]).stdout.strip()
    return bytes.fromhex(out.replace(":", ""))


class Router:
    """A client -- fw -- server topology into which raw IP packets are injected and seen come
    out (see the module doc); what forwards them in the fw namespace is a subclass's
    `_forwarder()`: the kernel's conntrack here, fwd's daemon in daemon.py."""

    def __init__(self, prefix: str) -> None:
        self.topo = Topology.create(prefix)
        try:
            self._setup()
            self._forwarder()
        except BaseException:
            self.close()
            raise

    def _forwarder(self) -> None:
        raise NotImplementedError

    def _setup(self) -> None:
        t = self.topo
        for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter",
                    f"net.ipv4.conf.{FW_IN_IF}.rp_filter", f"net.ipv4.conf.{FW_OUT_IF}.rp_filter",
                    "net.ipv4.conf.all.send_redirects", f"net.ipv4.conf.{FW_IN_IF}.send_redirects",
                    f"net.ipv4.conf.{FW_OUT_IF}.send_redirects"):
            t.run(t.fw, ["sysctl", "-qw", f"{key}=0"])
        for cmd in ("iptables", "ip6tables"):
            for ns in (t.client, t.server):  # the end hosts' stacks stay silent
                for chain in ("INPUT", "OUTPUT"):
                    t.run(ns, [cmd, "-P", chain, "DROP"])
        self.mac = {"c": _mac(t, t.client, CLIENT_IF), "s": _mac(t, t.server, SERVER_IF),
                    "fc": _mac(t, t.fw, FW_IN_IF), "fs": _mac(t, t.fw, FW_OUT_IF)}
        for side, dev, hosts in (("c", FW_IN_IF, CLIENT_SIDE_HOSTS),
                                 ("s", FW_OUT_IF, SERVER_SIDE_HOSTS)):
            lladdr = ":".join(f"{b:02x}" for b in self.mac[side])
            for fam in (4, 6):
                for host in (ENDS[(side, fam)], *hosts[fam]):
                    t.ip(t.fw, "neigh", "replace", host, "lladdr", lladdr, "dev", dev,
                         "nud", "permanent")
        self.sock = {}
        for side, ns, dev in (("c", t.client, CLIENT_IF), ("s", t.server, SERVER_IF)):
            with entered(ns):  # the socket stays in ns
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                s.bind((dev, 0))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            self.sock[side] = s
        self.barrier_seq = 0

    def flush(self) -> None:
        """Forgets every connection (between batches of sequences)."""
        raise NotImplementedError

    def outcome(self, forwarded: list[bytes]) -> str:
        """"drop", or the state the forwarder gave the packet that came out as `forwarded`."""
        raise NotImplementedError

    def _frame(self, side: str, packet: bytes) -> bytes:
        ethertype = 0x0800 if packet[0] >> 4 == 4 else 0x86DD
        return self.mac["f" + side] + self.mac[side] + struct.pack("!H", ethertype) + packet

    def _barrier(self, exit_side: str, family: int) -> tuple[bytes, bytes]:
        """A datagram the fw namespace forwards untracked out of `exit_side`."""
        from scapy.all import IP, UDP, IPv6, raw
        self.barrier_seq += 1
        src, dst = ENDS[("s" if exit_side == "c" else "c", family)], ENDS[(exit_side, family)]
        l3 = IP(src=src, dst=dst) if family == 4 else IPv6(src=src, dst=dst)
        payload = b"fwdiff-barrier-%d" % self.barrier_seq
        return raw(l3 / UDP(sport=BARRIER_PORT, dport=BARRIER_PORT) / payload), payload

    def send(self, side: str, packet: bytes, timeout: float = 2.0) -> list[bytes]:
        """Injects `packet` (raw IP) from `side` ("c" or "s") and returns the IP packets that
        came out where it is routed because of it (empty: dropped, or held as a fragment)."""
        family = packet[0] >> 4
        exit_side = self.side_of(packet)
        far = self.sock[exit_side]
        self._drain(far)
        barrier, tag = self._barrier(exit_side, family)
        near = self.sock[side]
        near.send(self._frame(side, packet))
        near.send(self._frame(side, barrier))
        got, deadline = [], time.monotonic() + timeout
        far.settimeout(timeout)
        while True:
            try:
                frame, addr = far.recvfrom(65600)
            except socket.timeout:
                raise RuntimeError("barrier lost: the fw namespace did not forward it") from None
            if addr[2] == PACKET_OUTGOING or len(frame) < 14:
                continue
            ip = frame[14:]
            if tag in ip:
                return got
            if struct.unpack("!H", frame[12:14])[0] in (0x0800, 0x86DD) and self._ours(ip):
                got.append(ip)
            if time.monotonic() > deadline:
                raise RuntimeError("barrier not seen in time")

    @staticmethod
    def side_of(packet: bytes) -> str:
        """Where the fw namespace routes `packet`: "c" or "s", by its destination."""
        if packet[0] >> 4 == 4:
            dst = socket.inet_ntop(socket.AF_INET, packet[16:20])
        else:
            dst = socket.inet_ntop(socket.AF_INET6, packet[24:40])
        client_side = {CLIENT4, CLIENT6, *CLIENT_SIDE_HOSTS[4], *CLIENT_SIDE_HOSTS[6]}
        return "c" if dst in client_side else "s"

    @staticmethod
    def _ours(ip: bytes) -> bool:
        """Not noise the fw namespace itself sends (neighbour discovery, MLD)."""
        if ip[0] >> 4 == 6:
            return not (ip[8] == 0xfe and ip[9] & 0xc0 == 0x80)  # link-local source
        return True

    @staticmethod
    def _drain(s: socket.socket) -> None:
        s.setblocking(False)
        try:
            while True:
                s.recv(65600)
        except BlockingIOError:
            pass
        finally:
            s.setblocking(True)

    def close(self) -> None:
        for s in getattr(self, "sock", {}).values():
            s.close()
        self.topo.close()


class KernelRouter(Router):
    """Forwards raw IP packets through the fw namespace's conntrack; see the module doc."""

    def __init__(self) -> None:
        super().__init__("fwdiff")

    def _forwarder(self) -> None:
        t = self.topo
        for cmd in ("iptables", "ip6tables"):
            for rule in _rules(cmd):
                t.run(t.fw, rule)
        # The kernel's defaults, stated: loose pickup on, strict windows, checksums verified.
        t.run(t.fw, ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=1"])
        t.run(t.fw, ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=0"])
        t.run(t.fw, ["sysctl", "-qw", "net.netfilter.nf_conntrack_checksum=1"])

    def flush(self) -> None:
        self.topo.run(self.topo.fw, ["conntrack", "-F"], check=False)

    def outcome(self, forwarded: list[bytes]) -> str:
        return self.state_of(forwarded[-1]) if forwarded else "drop"

    @staticmethod
    def state_of(forwarded: bytes) -> str:
        """The state the kernel assigned, read from the DSCP its mangle rules set."""
        if forwarded[0] >> 4 == 4:
            dscp = forwarded[1] >> 2
        else:
            dscp = ((forwarded[0] & 0x0F) << 4 | forwarded[1] >> 4) >> 2
        return STATE_OF_DSCP.get(dscp, f"dscp{dscp}")
