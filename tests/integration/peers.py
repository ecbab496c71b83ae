"""Traffic endpoints for the integration tests, run inside a namespace with `ip netns exec`.

    peers.py ROLE HOST PORT [--count N] [--timeout S]

Every role is bounded in packets and time, and reports on stdout as JSON lines: servers print
{"event": "ready"} once bound, then one line per thing they saw; clients print one result line.
An address with a ':' is IPv6.
"""

from __future__ import annotations

import argparse
import json
import socket
import time


def say(**event) -> None:
    print(json.dumps(event), flush=True)


def family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def tcp_echo(a) -> None:
    """Accept up to `count` connections within `timeout`; echo one message on each."""
    with socket.socket(family(a.host), socket.SOCK_STREAM) as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((a.host, a.port))
        srv.listen()
        say(event="ready")
        deadline = time.monotonic() + a.timeout
        for _ in range(a.count):
            srv.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                conn, peer = srv.accept()
            except TimeoutError:
                break
            with conn:
                say(event="accepted", peer=peer[0])
                conn.settimeout(a.timeout)
                conn.sendall(conn.recv(4096))


def tcp_connect(a) -> None:
    """Connect, send one message, receive the echo."""
    with socket.socket(family(a.host), socket.SOCK_STREAM) as s:
        s.settimeout(a.timeout)
        try:
            s.connect((a.host, a.port))
            s.sendall(b"hello fwd")
            say(reply=s.recv(4096).decode())
        except OSError as err:
            say(error=type(err).__name__)


def udp_server(a, echo: bool) -> None:
    """Receive up to `count` datagrams within `timeout`, answering each if `echo`."""
    with socket.socket(family(a.host), socket.SOCK_DGRAM) as s:
        s.bind((a.host, a.port))
        say(event="ready")
        deadline = time.monotonic() + a.timeout
        for _ in range(a.count):
            s.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data, peer = s.recvfrom(4096)
            except TimeoutError:
                break
            say(event="received", peer=peer[0], sport=peer[1])
            if echo:
                s.sendto(data, peer)


def udp_request(a) -> None:
    """Connected UDP socket: send one datagram, wait for the answer (or the refusal an ICMP port
    unreachable turns into)."""
    with socket.socket(family(a.host), socket.SOCK_DGRAM) as s:
        s.settimeout(a.timeout)
        s.connect((a.host, a.port))
        s.send(b"hello fwd")
        try:
            say(reply=s.recv(4096).decode())
        except OSError as err:
            say(error=type(err).__name__)


def udp_flows(a) -> None:
    """One datagram from each of `count` sockets, all open at once so that their source ports
    differ: `count` new flows."""
    socks = [socket.socket(family(a.host), socket.SOCK_DGRAM) for _ in range(a.count)]
    try:
        for s in socks:
            s.sendto(b"flow", (a.host, a.port))
        say(sports=[s.getsockname()[1] for s in socks])
    finally:
        for s in socks:
            s.close()


ROLES = {
    "tcp-echo": tcp_echo,
    "tcp-connect": tcp_connect,
    "udp-echo": lambda a: udp_server(a, echo=True),
    "udp-sink": lambda a: udp_server(a, echo=False),
    "udp-request": udp_request,
    "udp-flows": udp_flows,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("role", choices=ROLES)
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=5.0)
    a = p.parse_args()
    ROLES[a.role](a)


if __name__ == "__main__":
    main()
