"""`fwd ctl` and the daemon's control socket.

The daemon listens on a Unix socket (control.socket, mode 0600: root only) on its event loop.
Protocol: JSON lines; one request object per line, one response line each:
    {"command": "conntrack.list", "filter": {"proto": "tcp", "dport": 80}}
    -> {"ok": true, "result": [...]}  or  {"ok": false, "error": "filter.proto: must be ..."}
Commands: conntrack.list, conntrack.delete (both take "filter"; delete refuses an empty one),
conntrack.flush, stats (fwd.metrics.snapshot), reload (the daemon's SIGHUP path).
Table walks run in a worker thread (the C side releases the GIL), so the packet loop goes on.

`fwd ctl` is the client; its connection listing reads like `conntrack -L`.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import socket
import stat
import sys
import time
from dataclasses import dataclass
from typing import Any, Protocol

from fwd import _core, config

log = logging.getLogger("fwd")

MAX_REQUEST = 1 << 16  # bytes in one request line
CLIENT_TIMEOUT = 30.0  # seconds `fwd ctl` waits for the daemon
PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}
# States as Engine.connections() names them: TCP's, and UNREPLIED/REPLIED for the others.
STATES = _core.CONN_STATES


class RequestError(Exception):
    """A request the daemon refuses; the message is the client's error."""


class Controlled(Protocol):
    """What the control server needs from the daemon."""
    engine: _core.Engine
    last_reload: str

    def snapshot(self) -> dict[str, Any]: ...
    def reload(self) -> None: ...


# --- filters ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Filter:
    """Which connections a list/delete request means; None = any.  Addresses and ports are
    those of the original direction, as `conntrack -L` filters them."""

    proto: int | None = None
    src: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    dst: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    sport: tuple[int, int] | None = None
    dport: tuple[int, int] | None = None
    state: str | None = None

    @classmethod
    def parse(cls, data: Any) -> "Filter":
        """Check a request's filter object; raises config.ConfigError naming "filter.KEY".
        Values are written as in the config file: proto "tcp" or a number, addresses or
        networks, ports or "lo-hi" ranges; states in any case."""
        if isinstance(data, dict) and isinstance(data.get("state"), str):
            data = {**data, "state": data["state"].upper()}
        return cls(**config.read_table(data, "filter", {
            "proto": config.check_proto, "src": config.check_network, "dst": config.check_network,
            "sport": config.check_ports, "dport": config.check_ports, "state": config.check_choice(STATES),
        }))

    def empty(self) -> bool:
        return self == Filter()

    def match(self, c: dict[str, Any]) -> bool:
        return ((self.proto is None or c["proto"] == self.proto)
                and (self.src is None or ipaddress.ip_address(c["src"]) in self.src)
                and (self.dst is None or ipaddress.ip_address(c["dst"]) in self.dst)
                and (self.sport is None or self.sport[0] <= c["sport"] <= self.sport[1])
                and (self.dport is None or self.dport[0] <= c["dport"] <= self.dport[1])
                and (self.state is None or c["state"] == self.state))


# --- the server, in the daemon ----------------------------------------------------------------

class ControlServer:
    """The control socket on the running loop; close() stops it and removes the socket file."""

    def __init__(self, daemon: Controlled, path: str) -> None:
        self.daemon = daemon
        self.path = path
        self.server: asyncio.AbstractServer | None = None
        self._inode: int | None = None

    async def start(self) -> None:
        sock = _listen(self.path)
        self._inode = os.stat(self.path).st_ino
        self.server = await asyncio.start_unix_server(self._client, sock=sock, limit=MAX_REQUEST)

    def close(self) -> None:
        if self.server:
            self.server.close()
        try:  # only our own socket file: another fwd may have taken the path over since
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than the stream limit
                    writer.write(_line({"ok": False,
                                        "error": f"request longer than {MAX_REQUEST} bytes"}))
                    break
                if not line:
                    break
                writer.write(_line(await self.respond(line)))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def respond(self, line: bytes) -> dict[str, Any]:
        """One request line -> its response object."""
        try:
            try:
                request = json.loads(line)
            except ValueError:
                raise RequestError("a request is one line of JSON") from None
            if not isinstance(request, dict):
                raise RequestError('a request is a JSON object: {"command": ...}')
            command = request.pop("command", None)
            if not isinstance(command, str) or command not in COMMANDS:
                raise RequestError(f"unknown command {json.dumps(command)}; commands: "
                                   f"{', '.join(COMMANDS)}")
            handler, takes = COMMANDS[command]
            for key in request:
                if key not in takes:
                    raise RequestError(f"{command} takes no argument {json.dumps(key)}"
                                       + (f"; it takes {', '.join(takes)}" if takes else ""))
            return {"ok": True, "result": await handler(self.daemon, request)}
        except (RequestError, config.ConfigError) as err:
            return {"ok": False, "error": str(err)}
        except Exception as err:  # a bug: answer and keep serving
            log.exception("control request %r failed", line)
            return {"ok": False, "error": f"internal error: {err!r}"}


def _listen(path: str) -> socket.socket:
    """A listening Unix socket at `path` (its directory created 0700 if missing), mode 0600
    from the start; errors name control.socket."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        taken = _taken(path)
    except OSError as err:
        taken = err.strerror
    if taken:
        raise OSError(f"control.socket {path}: {taken}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the file is created 0600: no window for others
    try:
        sock.bind(path)
        sock.listen()
    except OSError as err:
        sock.close()
        raise OSError(f"control.socket {path}: {err.strerror}") from None
    finally:
        os.umask(old_umask)
    return sock


def _taken(path: str) -> str | None:
    """Why `path` is not free for our socket, or None.  A socket nobody listens on (left by a
    killed daemon) is removed."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(mode):
        return "exists and is not a socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
            return None
    return "another process is listening there"


def _line(obj: Any) -> bytes:
    return (json.dumps(obj) + "\n").encode()


async def _list(daemon: Controlled, request: dict[str, Any]) -> list[dict[str, Any]]:
    match = Filter.parse(request.get("filter", {}))
    conns = await asyncio.to_thread(daemon.engine.connections, time.monotonic())
    return [c for c in conns if match.match(c)]


async def _delete(daemon: Controlled, request: dict[str, Any]) -> dict[str, int]:
    if Filter.parse(request.get("filter", {})).empty():
        raise RequestError("conntrack.delete needs a filter; to delete every connection use "
                           "conntrack.flush")
    conns = await _list(daemon, request)

    def kill() -> int:  # a connection that ended by itself meanwhile is not counted
        return sum(daemon.engine.kill(c["family"], c["proto"], c["src"], c["dst"], c["sport"],
                                      c["dport"]) for c in conns)

    return {"deleted": await asyncio.to_thread(kill)}


async def _flush(daemon: Controlled, request: dict[str, Any]) -> dict[str, int]:
    return {"deleted": await asyncio.to_thread(daemon.engine.flush)}


async def _expect_list(daemon: Controlled, request: dict[str, Any]) -> list[dict[str, Any]]:
    return await asyncio.to_thread(daemon.engine.expectations, time.monotonic())


async def _expect_flush(daemon: Controlled, request: dict[str, Any]) -> dict[str, int]:
    return {"deleted": await asyncio.to_thread(daemon.engine.flush_expectations)}


async def _stats(daemon: Controlled, request: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.to_thread(daemon.snapshot)


async def _reload(daemon: Controlled, request: dict[str, Any]) -> dict[str, str]:
    daemon.reload()  # the SIGHUP path: all of the file or nothing
    if not daemon.last_reload.startswith("ok"):
        raise RequestError(f"reload {daemon.last_reload}")
    return {"reload": daemon.last_reload}


# command -> (handler, the request keys it takes besides "command")
COMMANDS = {
    "conntrack.list": (_list, ("filter",)),
    "conntrack.delete": (_delete, ("filter",)),
    "conntrack.flush": (_flush, ()),
    "expect.list": (_expect_list, ()),
    "expect.flush": (_expect_flush, ()),
    "stats": (_stats, ()),
    "reload": (_reload, ()),
}


# --- the client: fwd ctl ----------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH",
                       help=f"the daemon's control socket (default: {config.ControlConfig.socket})")
    where.add_argument("--config", metavar="FILE", help="use control.socket of this config file")
    sub = parser.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND")
    conntrack = sub.add_parser("conntrack", help="list, delete or flush tracked connections")
    ct_sub = conntrack.add_subparsers(dest="ct_command", required=True, metavar="ACTION")
    for name, help_text in (("list", "list connections, like conntrack -L"),
                            ("delete", "delete the connections that match the filters")):
        p = ct_sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("-p", "--proto", type=_number_or_text,
                       help="tcp, udp, icmp, icmpv6 or a protocol number")
        p.add_argument("-s", "--src", help="original source address or network")
        p.add_argument("-d", "--dst", help="original destination address or network")
        p.add_argument("--sport", type=_number_or_text,
                       help="original source port or range lo-hi (ICMP: the id)")
        p.add_argument("--dport", type=_number_or_text,
                       help="original destination port or range lo-hi")
        p.add_argument("--state", help=f"connection state: {', '.join(STATES)}")
        if name == "list":
            p.add_argument("--json", action="store_true", help="one JSON list of connections")
    ct_sub.add_parser("flush", help="delete every connection")
    expect = sub.add_parser("expect", help="list or flush expectations (helpers' pinholes)")
    exp_sub = expect.add_subparsers(dest="exp_command", required=True, metavar="ACTION")
    exp_list = exp_sub.add_parser("list", help="list expectations, like conntrack -L expect")
    exp_list.add_argument("--json", action="store_true", help="one JSON list of expectations")
    exp_sub.add_parser("flush", help="delete every expectation")
    stats = sub.add_parser("stats", help="counters, locks, table and queue statistics")
    stats.add_argument("--json", action="store_true", help="the raw snapshot as JSON")
    sub.add_parser("reload", help="re-read the configuration file (as SIGHUP does)")


def _number_or_text(text: str) -> int | str:
    """A filter argument: a number is sent as one, anything else ("tcp", "80-90") as text; the
    daemon checks both."""
    return int(text) if text.isdigit() else text


def call(path: str, request: dict[str, Any], timeout: float = CLIENT_TIMEOUT) -> dict[str, Any]:
    """Send one request to the daemon at `path` and return its response."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(_line(request))
        with sock.makefile("rb") as f:
            line = f.readline()
    if not line:
        raise ConnectionError("the daemon closed the connection without an answer")
    return json.loads(line)


def _request(args: argparse.Namespace) -> dict[str, Any]:
    if args.ctl_command == "expect":
        return {"command": f"expect.{args.exp_command}"}
    if args.ctl_command != "conntrack":
        return {"command": args.ctl_command}
    request: dict[str, Any] = {"command": f"conntrack.{args.ct_command}"}
    if args.ct_command != "flush":
        request["filter"] = {k: v for k in ("proto", "src", "dst", "sport", "dport", "state")
                             if (v := getattr(args, k)) is not None}
    return request


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return args.socket
    if args.config:
        path = config.load(args.config).control.socket
        if not path:
            raise config.ConfigError("control.socket", f"is empty (disabled) in {args.config}")
        return path
    return config.ControlConfig.socket


def main(args: argparse.Namespace) -> int:
    try:
        path = _socket_path(args)
    except config.ConfigError as err:
        print(f"fwd ctl: config error: {err}", file=sys.stderr)
        return config.EXIT_CONFIG
    request = _request(args)
    try:
        response = call(path, request)
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        print(f"fwd ctl: cannot talk to fwd at {path}: {reason} (is fwd running?)",
              file=sys.stderr)
        return 1
    if not response.get("ok"):
        print(f"fwd ctl: {response.get('error')}", file=sys.stderr)
        return 1
    result = response["result"]
    if getattr(args, "json", False):
        print(json.dumps(result, indent=1))
    elif request["command"] == "conntrack.list":
        for c in result:
            print(format_connection(c))
        print(f"fwd ctl: {len(result)} flow entries have been shown.", file=sys.stderr)
    elif request["command"] == "expect.list":
        for x in result:
            print(format_expectation(x))
        print(f"fwd ctl: {len(result)} expectations have been shown.", file=sys.stderr)
    elif request["command"] == "expect.flush":
        print(f"fwd ctl: {result['deleted']} expectations have been deleted.")
    elif request["command"] == "stats":
        print(format_stats(result))
    elif "deleted" in result:
        print(f"fwd ctl: {result['deleted']} flow entries have been deleted.")
    else:
        print(f"fwd ctl: reload {result['reload']}")
    return 0


def format_expectation(x: dict[str, Any]) -> str:
    """One expectation the way `conntrack -L expect` prints it; a wildcard shows as 0 ("any"):
    180 proto=17 src=10.0.0.2 dst=10.0.0.1 sport=0 dport=4000 master-src=10.0.0.1
    master-dst=10.0.0.2 sport=5060 dport=5060 class=audio helper=sip"""
    m = x["master"]
    flags = "".join(f" {f.upper()}" for f in x["flags"])
    return (f"{int(x['timeout'])} proto={config.PROTOCOLS.get(x['proto'], x['proto'])} "
            f"src={x['src'] or ('::' if x['family'] == 6 else '0.0.0.0')} dst={x['dst']} "
            f"sport={x['sport'] or 0} dport={x['dport']} master-src={m['src']} "
            f"master-dst={m['dst']} sport={m['sport']} dport={m['dport']} class={x['class']} "
            f"helper={x['helper']}{flags}")


def format_connection(c: dict[str, Any]) -> str:
    """One connection the way `conntrack -L` prints it (with accounting), e.g.
    tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 packets=3
    src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 packets=2 [ASSURED]"""
    proto = c["proto"]
    words = [f"{PROTO_NAMES.get(proto, 'unknown'):8} {proto} {int(c['timeout'])}"]
    if proto == 6:
        words.append(c["state"])
    words += [f"src={c['src']} dst={c['dst']}", _ports(proto, c["sport"], c["dport"]),
              f"packets={c['packets_orig']}"]
    if not c["seen_reply"]:
        words.append("[UNREPLIED]")
    words += [f"src={c['reply_src']} dst={c['reply_dst']}",
              _ports(proto, c["reply_sport"], c["reply_dport"]), f"packets={c['packets_reply']}"]
    if c["assured"]:
        words.append("[ASSURED]")
    return " ".join(w for w in words if w)


def _ports(proto: int, sport: int, dport: int) -> str:
    if proto in (6, 17):
        return f"sport={sport} dport={dport}"
    if proto in (1, 58):  # ICMP: the tuple's ports are the echo id and the message type
        return f"type={dport} id={sport}"
    return ""


def format_stats(snap: dict[str, Any]) -> str:
    """fwd.metrics.snapshot() for people."""
    s = snap["stats"]
    lines = [f"fwd {snap['version']}", f"health: {snap.get('health', 'ok')}"]
    if reload := snap.get("reload"):
        loaded = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(reload["timestamp"]))
        lines.append(f"last reload: {'ok' if reload['success'] else 'FAILED'}; running "
                     f"configuration loaded {loaded}")
    lines.append(f"table: {s['entries']} connections of {s['max_entries']} "
                 f"({100 * s['entries'] / s['max_entries']:.1f}% full), {s['buckets']} buckets, "
                 f"{s['shards']} shards (fullest {s['max_shard_entries']}, "
                 f"mean {s['entries'] / s['shards']:.2f})")
    for cls, lock in s["locks"].items():
        share = lock["contended"] / lock["acquisitions"] if lock["acquisitions"] else 0.0
        lines.append(f"lock {cls}: {lock['count']} locks, {lock['acquisitions']} acquisitions, "
                     f"{lock['contended']} contended ({100 * share:.2f}%), waited "
                     f"{lock['wait_ns'] / 1e9:.6f} s, held {lock['hold_ns'] / 1e9:.6f} s")
    counters = {**s["ct"], **{k: s[k] for k in ("early_drop", "delete", "gc_removed")}}
    lines.append("conntrack: " + " ".join(f"{k}={v}" for k, v in counters.items()))
    states = [f"{proto} {state}={n}" for proto, by in snap["connections"].items()
              for state, n in by.items() if n]
    lines.append("connections: " + (", ".join(states) or "none"))
    for r in snap["rules"] or []:
        lines.append(f"rule {r['rule']}: {r['verdict']} {r['hits']}")
    for q in snap["queues"]:
        kernel = q["kernel"] or {}
        lines.append(f"queue {q['queue']}: {q['packets']} packets in {q['batches']} batches, "
                     f"{kernel.get('queue_total', '?')} waiting, "
                     f"{kernel.get('queue_dropped', '?')} dropped (queue full), "
                     f"{kernel.get('user_dropped', '?')} dropped (socket full)"
                     + (", worker STALLED" if q.get("stalled") else ""))
    return "\n".join(lines)
