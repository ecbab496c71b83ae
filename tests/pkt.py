"""Packet builders for the tests: real bytes made by scapy, one line per packet."""

from scapy.all import ICMP, IP, TCP, UDP, ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest, IPv6, raw

C4, S4 = "10.1.0.1", "10.2.0.1"
C6, S6 = "fd00:1::1", "fd00:2::1"


def ip(src, dst):
    return IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)


def tcp(src, dst, sport, dport, flags):
    return raw(ip(src, dst) / TCP(sport=sport, dport=dport, flags=flags))


def udp(src, dst, sport, dport, payload=b"x"):
    return raw(ip(src, dst) / UDP(sport=sport, dport=dport) / payload)


def echo(src, dst, ident, reply=False):
    if ":" in src:
        msg = ICMPv6EchoReply(id=ident) if reply else ICMPv6EchoRequest(id=ident)
    else:
        msg = ICMP(type=0 if reply else 8, id=ident)
    return raw(ip(src, dst) / msg)


def port_unreachable(quoted: bytes, src, dst):
    """An ICMP(v6) port-unreachable from src to dst quoting the packet `quoted`."""
    if ":" in src:
        return raw(IPv6(src=src, dst=dst) / ICMPv6DestUnreach(code=4) / quoted)
    return raw(IP(src=src, dst=dst) / ICMP(type=3, code=3) / quoted)


def batch(*packets):
    """Engine.process input with unknown interfaces."""
    return [(p, 0, 0) for p in packets]
