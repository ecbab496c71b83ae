"""The two parties of a scripted H.323 call for the integration tests, run inside a namespace
with `ip netns exec`:

    h323peer.py server|caller MESSAGES.json CALLER SERVER

The messages (hex, encoded by tests/h323msg.py) are sent in this order: the caller registers
with the server as gatekeeper (RRQ/RCF from its RAS port 1719) and is admitted (ARQ/ACF),
calls it on TCP 1720 (Setup with fastStart and an H.245 address, answered by Connect), then the
server opens the H.245 channel to the caller's H.245 address (OpenLogicalChannel, answered by
OpenLogicalChannelAck) and sends one RTP packet to the caller's fastStart RTP port.  Every step
is bounded by a timeout; each party prints one JSON line: {"ok": true} or {"error": "..."};
the server prints {"event": "ready"} first.
"""

from __future__ import annotations

import json
import socket
import struct
import sys

H245_PORT, RTP_PORT, SERVER_RTP_PORT = 5000, 6000, 7777
TIMEOUT = 5.0


def family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def sock(host: str, kind: int, port: int = 0) -> socket.socket:
    s = socket.socket(family(host), kind)
    s.settimeout(TIMEOUT)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed mid-TPKT")
        data += chunk
    return data


def recv_tpkt(s: socket.socket) -> bytes:
    head = recv_exact(s, 4)
    return head + recv_exact(s, struct.unpack("!H", head[2:])[0] - 4)


def server(m: dict, caller: str, me: str) -> None:
    with sock(me, socket.SOCK_DGRAM, 1719) as ras, sock(me, socket.SOCK_STREAM, 1720) as lst:
        lst.listen(1)
        print(json.dumps({"event": "ready"}), flush=True)
        for answer in ("rcf", "acf"):
            _, peer = ras.recvfrom(4096)
            ras.sendto(m[answer], peer)
        q931, _ = lst.accept()
        with q931:
            q931.settimeout(TIMEOUT)
            recv_tpkt(q931)  # Setup
            q931.sendall(m["connect"])
            with sock(me, socket.SOCK_STREAM) as h245:
                h245.connect((caller, H245_PORT))
                h245.sendall(m["olc"])
                recv_tpkt(h245)  # OpenLogicalChannelAck
            with sock(me, socket.SOCK_DGRAM, SERVER_RTP_PORT) as rtp:
                rtp.sendto(b"\x80" + bytes(171), (caller, RTP_PORT))


def caller(m: dict, me: str, server_addr: str) -> None:
    with sock(me, socket.SOCK_DGRAM, 1719) as ras, sock(me, socket.SOCK_STREAM, H245_PORT) as lst, \
            sock(me, socket.SOCK_DGRAM, RTP_PORT) as rtp:
        lst.listen(1)
        for ask in ("rrq", "arq"):
            ras.sendto(m[ask], (server_addr, 1719))
            ras.recvfrom(4096)
        with sock(me, socket.SOCK_STREAM) as q931:
            q931.connect((server_addr, 1720))
            q931.sendall(m["setup"])
            recv_tpkt(q931)  # Connect
            h245, _ = lst.accept()
            with h245:
                h245.settimeout(TIMEOUT)
                recv_tpkt(h245)  # OpenLogicalChannel
                h245.sendall(m["olca"])
            rtp.recvfrom(4096)


def main() -> None:
    role, path, caller_addr, server_addr = sys.argv[1:5]
    with open(path) as f:
        m = {k: bytes.fromhex(v) for k, v in json.load(f).items()}
    try:
        if role == "server":
            server(m, caller_addr, server_addr)
        else:
            caller(m, caller_addr, server_addr)
    except (OSError, ConnectionError) as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return
    print(json.dumps({"ok": True}), flush=True)


if __name__ == "__main__":
    main()
