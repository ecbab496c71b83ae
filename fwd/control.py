"""`fwd ctl` and the daemon's control socket.

The daemon listens on a Unix socket (control.socket, mode 0600: root only) on its event loop.
Protocol: JSON lines; one request object per line, one response line each:
    {"command": "conntrack.list", "filter": {"proto": "tcp", "dport": 80}}
    -> {"ok": true, "result": [...]}  or  {"ok": false, "error": "filter.proto: must be ..."}
except that a listing comes in pieces of about CHUNK connections, each on a line marked
"more", then a last line: {"ok": true, "more": true, "result": [...]} ... {"ok": true,
"result": []}.  conntrack.events streams that way until the client goes: pieces of connection
events ("event": "NEW" or "DESTROY", as `conntrack -E`; {"event": "LOST", "count": n} when a
client fell behind).
Commands: conntrack.list, conntrack.delete, conntrack.events (all take "filter"; delete refuses
an empty one), conntrack.flush, expect.list, expect.flush, stats (fwd.metrics.snapshot), reload
(the daemon's SIGHUP path).

Table walks run in worker threads (the C side releases the GIL), a piece at a time and
filtered in C, so the packet loop goes on and a listing never holds the table in Python.  Each
client is bounded: MAX_CLIENTS at once, CLIENT_IDLE to send a request, SEND_TIMEOUT to take
each line of the answer (one that does not read is dropped), LISTINGS walks at once.

`fwd ctl` is the client; its connection listing reads like `conntrack -L`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import socket
import stat
import sys
import time
from dataclasses import dataclass
from collections.abc import AsyncGenerator, Iterator
from typing import Any, Protocol

from fwd import _core, config, helper_config

log = logging.getLogger("fwd")

MAX_REQUEST = 1 << 16  # bytes in one request line
CLIENT_TIMEOUT = 30.0  # seconds `fwd ctl` waits for the daemon
CHUNK = 256            # connections per response line of a listing
MAX_CLIENTS = 16       # control connections at once; more are answered with an error
CLIENT_IDLE = 60.0     # seconds a connection may take to send its next request
SEND_TIMEOUT = 10.0    # seconds a client may take to read one response line
LISTINGS = 2           # table walks at once, each in a worker thread
EVENT_INTERVAL = 0.2   # seconds between takes of the engine's connection events
EVENT_BACKLOG = 64     # pieces of events a client may fall behind before it loses some
EVENT_KEEPALIVE = 1.0  # seconds without events before an empty piece (a client gone shows)
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
    helper: str | None = None
    mark: tuple[int, int] | None = None  # (value, mask): mark & mask == value

    @classmethod
    def parse(cls, data: Any) -> "Filter":
        """Check a request's filter object; raises config.ConfigError naming "filter.KEY".
        Values are written as in the config file: proto "tcp" or a number, addresses or
        networks, ports or "lo-hi" ranges; states in any case; a helper by name; a mark as a
        number or "N/MASK" (decimal or 0x hex), as conntrack --mark."""
        if isinstance(data, dict) and isinstance(data.get("state"), str):
            data = {**data, "state": data["state"].upper()}
        f = cls(**config.read_table(data, "filter", {
            "proto": config.check_proto, "src": config.check_network, "dst": config.check_network,
            "sport": config.check_ports, "dport": config.check_ports, "state": config.check_choice(STATES),
            "helper": config.check_choice(tuple(helper_config.available())),
            "mark": _check_mark,
        }))
        if f.src and f.dst and f.src.version != f.dst.version:
            raise config.ConfigError("filter.dst", f"is IPv{f.dst.version}, filter.src "
                                                   f"IPv{f.src.version}")
        return f

    def empty(self) -> bool:
        return self == Filter()

    def native(self) -> tuple | None:
        """The filter as Engine.connections takes it (checked in C during the walk)."""
        if self.empty():
            return None
        family = (self.src or self.dst).version if (self.src or self.dst) else 0
        return (-1 if self.proto is None else self.proto, family,
                self.src and self.src.network_address.packed,
                self.src.prefixlen if self.src else -1,
                self.dst and self.dst.network_address.packed,
                self.dst.prefixlen if self.dst else -1,
                *(self.sport or (0, 65535)), *(self.dport or (0, 65535)), self.state, self.helper,
                *(self.mark or (0, 0)))


_MARK_RE = re.compile(r"(0[xX][0-9a-fA-F]+|[0-9]+)(?:/(0[xX][0-9a-fA-F]+|[0-9]+))?")


def _check_mark(value: Any, key: str) -> tuple[int, int]:
    """A mark filter: N or "N/MASK" -> (N, MASK), MASK 0xffffffff when not given.  A mark with
    bits outside its mask could match nothing, so it is refused."""
    if type(value) is int:
        mark = (value, config.MAX_U32)
    elif isinstance(value, str) and (m := _MARK_RE.fullmatch(value)):
        mark = (int(m[1], 0), int(m[2], 0) if m[2] else config.MAX_U32)
    else:
        mark = None
    if mark is None or not (0 <= mark[0] <= config.MAX_U32 and 0 <= mark[1] <= config.MAX_U32):
        raise config.ConfigError(key, 'must be a mark 0..4294967295 or "mark/mask" (decimal or '
                                      f"0x hex), got {config.show(value)}")
    if mark[0] & ~mark[1]:
        raise config.ConfigError(key, f"{config.show(value)} has bits outside the mask: it "
                                      "matches nothing")
    return mark


# --- the server, in the daemon ----------------------------------------------------------------

@dataclass
class _Listener:
    """A client of conntrack.events."""
    native: tuple | None  # its filter as Engine.events_take takes it (Filter.native())
    behind: int = 0       # events it lost since its last piece (its queue was full)


class ControlServer:
    """The control socket on the running loop; close() stops it and removes the socket file."""

    def __init__(self, daemon: Controlled, path: str) -> None:
        self.daemon = daemon
        self.path = path
        self.server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self.clients = 0
        self.walks = asyncio.Semaphore(LISTINGS)
        # Event listeners: their queue of pieces -> what they asked for and have lost.
        self.listeners: dict[asyncio.Queue, _Listener] = {}
        self._pump: asyncio.Task | None = None

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
        async def send(response: dict[str, Any]) -> None:
            writer.write(_line(response))
            await asyncio.wait_for(writer.drain(), SEND_TIMEOUT)

        self.clients += 1
        try:
            if self.clients > MAX_CLIENTS:
                await send({"ok": False, "error": f"busy: {MAX_CLIENTS} clients connected"})
                return
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), CLIENT_IDLE)
                except ValueError:  # longer than the stream limit
                    await send({"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"})
                    break
                if not line:
                    break
                async with contextlib.aclosing(self.respond(line)) as responses:
                    async for response in responses:
                        await send(response)
        except (ConnectionError, TimeoutError):
            pass  # gone, idle or not reading: its connection goes
        finally:
            self.clients -= 1
            writer.close()

    async def respond(self, line: bytes) -> AsyncGenerator[dict[str, Any], None]:
        """One request line -> its response objects: one, or the pieces of a listing."""
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
            result = await handler(self, request)
            if not isinstance(result, AsyncGenerator):
                yield {"ok": True, "result": result}
                return
            async with contextlib.aclosing(result) as pieces:
                async for piece in pieces:
                    yield {"ok": True, "more": True, "result": piece}
            yield {"ok": True, "result": []}
        except (RequestError, config.ConfigError) as err:
            yield {"ok": False, "error": str(err)}
        except Exception as err:  # a bug: answer and keep serving
            log.exception("control request %r failed", line)
            yield {"ok": False, "error": f"internal error: {err!r}"}

    async def events(self, match: Filter) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Pieces of the events of connections that `match`, from now on, for as long as the
        caller takes them."""
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue(EVENT_BACKLOG)
        if not self.listeners:
            self.daemon.engine.events_listen(True)
            self._pump = asyncio.create_task(self._pump_events(), name="conntrack events")
        self.listeners[queue] = _Listener(match.native())
        try:
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), EVENT_KEEPALIVE)
                except TimeoutError:
                    yield []  # nothing happened: sending that finds out if the client left
        finally:
            del self.listeners[queue]
            if not self.listeners and self._pump:
                self._pump.cancel()
                self.daemon.engine.events_listen(False)

    async def _pump_events(self) -> None:
        """Takes the engine's events every EVENT_INTERVAL and hands them to every listener; one
        that is EVENT_BACKLOG pieces behind loses them (and is told how many)."""
        while True:
            await asyncio.sleep(EVENT_INTERVAL)
            for _ in range(EVENT_BACKLOG):  # what came meanwhile, a piece at a time; bounded:
                filters = [listener.native for listener in self.listeners.values()]
                events, lost, picks = self.daemon.engine.events_take(time.monotonic(), CHUNK,
                                                                     filters)
                if events or lost:  # the loop has other clients to serve
                    self._hand_out(events, lost, picks)
                if len(events) < CHUNK:
                    break

    def _hand_out(self, events: list[dict[str, Any]], lost: int, picks: list[list[int]]) -> None:
        """Each listener gets the events its filter picked (C matched them); events the engine
        lost are counted to every listener, as nobody can tell whose they were."""
        for (queue, listener), pick in zip(self.listeners.items(), picks):
            mine = events if listener.native is None else [events[i] for i in pick]
            if queue.full():
                listener.behind += len(mine) + lost
                continue
            missed = listener.behind + lost
            if mine or missed:
                queue.put_nowait(mine + ([{"event": "LOST", "count": missed}] if missed else []))
            listener.behind = 0

    async def pieces(self, match: Filter) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The matching connections, about CHUNK at a time, walked in C a piece at a time."""
        start = 0
        while True:
            async with self.walks:
                piece, start = await asyncio.to_thread(
                    self.daemon.engine.connections_page, time.monotonic(), start, CHUNK,
                    match.native())
            if piece:
                yield piece
            if not start:
                return


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


async def _list(server: ControlServer, request: dict[str, Any]
                ) -> AsyncGenerator[list[dict[str, Any]], None]:
    return server.pieces(Filter.parse(request.get("filter", {})))


async def _delete(server: ControlServer, request: dict[str, Any]) -> dict[str, int]:
    match = Filter.parse(request.get("filter", {}))
    if match.empty():
        raise RequestError("conntrack.delete needs a filter; to delete every connection use "
                           "conntrack.flush")
    engine = server.daemon.engine

    def kill(conns: list[dict[str, Any]]) -> int:  # one that ended meanwhile is not counted
        return sum(engine.kill(c["family"], c["proto"], c["src"], c["dst"], c["sport"],
                               c["dport"]) for c in conns)

    deleted = 0
    async for piece in server.pieces(match):
        deleted += await asyncio.to_thread(kill, piece)
    return {"deleted": deleted}


async def _events(server: ControlServer, request: dict[str, Any]
                  ) -> AsyncGenerator[list[dict[str, Any]], None]:
    return server.events(Filter.parse(request.get("filter", {})))


async def _flush(server: ControlServer, request: dict[str, Any]) -> dict[str, int]:
    return {"deleted": await asyncio.to_thread(server.daemon.engine.flush)}


async def _expect_list(server: ControlServer, request: dict[str, Any]) -> list[dict[str, Any]]:
    return await asyncio.to_thread(server.daemon.engine.expectations, time.monotonic())


async def _expect_flush(server: ControlServer, request: dict[str, Any]) -> dict[str, int]:
    return {"deleted": await asyncio.to_thread(server.daemon.engine.flush_expectations)}


async def _stats(server: ControlServer, request: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.to_thread(server.daemon.snapshot)


async def _reload(server: ControlServer, request: dict[str, Any]) -> dict[str, str]:
    daemon = server.daemon
    daemon.reload()  # the SIGHUP path: all of the file or nothing
    if not daemon.last_reload.startswith("ok"):
        raise RequestError(f"reload {daemon.last_reload}")
    return {"reload": daemon.last_reload}


# command -> (handler, the request keys it takes besides "command")
COMMANDS = {
    "conntrack.list": (_list, ("filter",)),
    "conntrack.delete": (_delete, ("filter",)),
    "conntrack.flush": (_flush, ()),
    "conntrack.events": (_events, ("filter",)),
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
                            ("delete", "delete the connections that match the filters"),
                            ("events", "show connections as they come and go, like conntrack -E "
                                       "(until interrupted)")):
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
        p.add_argument("--helper", help="connections with this helper attached (e.g. sip)")
        p.add_argument("--mark", type=_number_or_text,
                       help="connection mark N or N/MASK (the policy's mark of its first packet)")
        if name == "list":
            _output_arguments(p, "connections", ("json", "extended"))
        elif name == "events":
            p.add_argument("-o", "--output", choices=("json",),
                           help="json: each event a JSON object on a line of its own")
            p.add_argument("--json", dest="output", action="store_const", const="json",
                           help="the same as -o json")
    ct_sub.add_parser("flush", help="delete every connection")
    expect = sub.add_parser("expect", help="list or flush expectations (helpers' pinholes)")
    exp_sub = expect.add_subparsers(dest="exp_command", required=True, metavar="ACTION")
    exp_list = exp_sub.add_parser("list", help="list expectations, like conntrack -L expect")
    _output_arguments(exp_list, "expectations", ("json",))
    exp_sub.add_parser("flush", help="delete every expectation")
    stats = sub.add_parser("stats", help="counters, locks, table and queue statistics")
    stats.add_argument("--json", dest="output", action="store_const", const="json",
                       help="the raw snapshot as JSON")
    sub.add_parser("reload", help="re-read the configuration file (as SIGHUP does)")


def _output_arguments(parser: argparse.ArgumentParser, what: str, formats: tuple) -> None:
    parser.add_argument("-o", "--output", choices=formats,
                        help=f"json: one JSON list of {what}"
                        + ("; extended: with the network protocol first" if "extended" in formats
                           else ""))
    parser.add_argument("--json", dest="output", action="store_const", const="json",
                        help="the same as -o json")


def _number_or_text(text: str) -> int | str:
    """A filter argument: a number is sent as one, anything else ("tcp", "80-90") as text; the
    daemon checks both."""
    return int(text) if text.isdigit() else text


def responses(path: str, request: dict[str, Any], timeout: float | None = CLIENT_TIMEOUT
              ) -> Iterator[dict[str, Any]]:
    """Send one request to the daemon at `path`; yields its response lines as they come (a
    listing's pieces, the last without "more"); `timeout` (None: none) for each line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(_line(request))
        with sock.makefile("rb") as f:
            while True:
                line = f.readline()
                if not line:
                    raise ConnectionError("the daemon closed the connection without an answer")
                response = json.loads(line)
                yield response
                if not response.get("more"):
                    return


def call(path: str, request: dict[str, Any], timeout: float = CLIENT_TIMEOUT) -> dict[str, Any]:
    """Send one request to the daemon at `path` and return its response, a listing's pieces
    joined into one."""
    result: list[Any] = []
    for response in responses(path, request, timeout):
        if not response.get("more"):
            if result and response.get("ok"):
                response["result"] = result + response["result"]
            return response
        result += response["result"]
    raise AssertionError("unreachable: responses() ends with a last line")


def _request(args: argparse.Namespace) -> dict[str, Any]:
    if args.ctl_command == "expect":
        return {"command": f"expect.{args.exp_command}"}
    if args.ctl_command != "conntrack":
        return {"command": args.ctl_command}
    request: dict[str, Any] = {"command": f"conntrack.{args.ct_command}"}
    if args.ct_command in ("list", "delete", "events"):
        request["filter"] = {k: v for k in ("proto", "src", "dst", "sport", "dport", "state",
                                            "helper", "mark") if (v := getattr(args, k)) is not None}
    return request


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return args.socket
    if args.config:
        path = config.control_section(config.read_toml(args.config)).socket
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
        output = getattr(args, "output", None)
        if request["command"] == "conntrack.list" and output != "json":
            return _print_listing(path, request, output == "extended")
        if request["command"] == "conntrack.events":
            return _print_events(path, request, output == "json")
        response = call(path, request)
    except (OSError, ValueError) as err:
        return _cannot_talk(path, err)
    if not response.get("ok"):
        print(f"fwd ctl: {response.get('error')}", file=sys.stderr)
        return 1
    result = response["result"]
    if output == "json":
        print(json.dumps(result, indent=1))
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


def _cannot_talk(path: str, err: OSError | ValueError) -> int:
    reason = err.strerror if isinstance(err, OSError) and err.strerror else err
    print(f"fwd ctl: cannot talk to fwd at {path}: {reason} (is fwd running?)", file=sys.stderr)
    return 1


def _print_events(path: str, request: dict[str, Any], as_json: bool) -> int:
    """`conntrack -E`: one line per event as it comes (a JSON object with `as_json`), until
    interrupted (exit 0)."""
    try:
        for response in responses(path, request, timeout=None):
            if not response.get("ok"):
                print(f"fwd ctl: {response.get('error')}", file=sys.stderr)
                return 1
            for e in response["result"]:
                print(json.dumps(e) if as_json else format_event(e), flush=True)
    except KeyboardInterrupt:
        return 0
    print("fwd ctl: the daemon ended the event stream", file=sys.stderr)
    return 1


def format_event(e: dict[str, Any]) -> str:
    """One event the way `conntrack -E` prints it: the event right-aligned in brackets, then
    the connection (a destroyed one without timeout and state), e.g.
        [NEW] udp      17 30 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 packets=1 [UNREPLIED] ...
    [DESTROY] udp      17 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 packets=1 ..."""
    if e["event"] == "LOST":
        return f"fwd ctl: {e['count']} events lost (this client fell behind)"
    return f"{'[' + e['event'] + ']':>9} {format_connection(e, ended=e['event'] == 'DESTROY')}"


def _print_listing(path: str, request: dict[str, Any], extended: bool) -> int:
    """`conntrack -L`: connections printed as their pieces arrive, however many there are."""
    shown = 0
    for response in responses(path, request):
        if not response.get("ok"):
            print(f"fwd ctl: {response.get('error')}", file=sys.stderr)
            return 1
        for c in response["result"]:
            print(format_connection(c, extended))
        shown += len(response["result"])
    print(f"fwd ctl: {shown} flow entries have been shown.", file=sys.stderr)
    return 0


def format_expectation(x: dict[str, Any]) -> str:
    """One expectation the way `conntrack -L expect` prints it: timeout, tuple, mask (a
    wildcard address or port shows as 0 in the tuple and in the mask), master tuple, flags,
    class (by name) and helper, e.g.
    180 proto=17 src=10.0.0.2 dst=10.0.0.1 sport=0 dport=4000 mask-src=255.255.255.255
    mask-dst=255.255.255.255 sport=0 dport=65535 master-src=10.0.0.1 master-dst=10.0.0.2
    sport=5060 dport=5060 PERMANENT class=audio helper=sip"""
    m = x["master"]
    none, full = ("::", "ffff:" * 7 + "ffff") if x["family"] == 6 else ("0.0.0.0", "255.255.255.255")
    flags = "".join(f" {f.upper()}" for f in x["flags"])
    return (f"{int(x['timeout'])} proto={config.PROTOCOLS.get(x['proto'], x['proto'])} "
            f"src={x['src'] or none} dst={x['dst']} sport={x['sport'] or 0} dport={x['dport']} "
            f"mask-src={full if x['src'] else none} mask-dst={full} "
            f"sport={65535 if x['sport'] is not None else 0} dport=65535 "
            f"master-src={m['src']} master-dst={m['dst']} sport={m['sport']} dport={m['dport']}"
            f"{flags} class={x['class']} helper={x['helper']}")


def format_connection(c: dict[str, Any], extended: bool = False, ended: bool = False) -> str:
    """One connection the way `conntrack -L` prints it, e.g.
    tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 packets=3 bytes=180
    src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 packets=2 bytes=120 [ASSURED] mark=7 helper=sip
    use=1
    Packets always (fwd counts them), bytes only for a connection that counts them
    (conntrack.accounting), as conntrack shows them only with nf_conntrack_acct.
    `extended` (`-o extended`) puts the network protocol first: "ipv4     2 tcp      6 ...";
    an `ended` connection (a DESTROY event) has no timeout nor state left to show."""
    proto = c["proto"]
    words = [f"{PROTO_NAMES.get(proto, 'unknown'):8} {proto}"]
    if extended:
        words.insert(0, f"ipv{c['family']}     {10 if c['family'] == 6 else 2}")
    if not ended:
        words.append(str(int(c["timeout"])))
    if proto == 6 and not ended:
        words.append(c["state"])
    words += [f"src={c['src']} dst={c['dst']}", _ports(proto, c["sport"], c["dport"]),
              _counters(c, "orig")]
    if not c["seen_reply"]:
        words.append("[UNREPLIED]")
    words += [f"src={c['reply_src']} dst={c['reply_dst']}",
              _ports(proto, c["reply_sport"], c["reply_dport"]), _counters(c, "reply")]
    if c["assured"]:
        words.append("[ASSURED]")
    if "mark" in c:
        words.append(f"mark={c['mark']}")
    if c.get("helper"):
        words.append(f"helper={c['helper']}")
    if "use" in c:
        words.append(f"use={c['use']}")
    return " ".join(w for w in words if w)


def _counters(c: dict[str, Any], direction: str) -> str:
    packets = f"packets={c['packets_' + direction]}"
    return f"{packets} bytes={c['bytes_' + direction]}" if "bytes_" + direction in c else packets


def _ports(proto: int, sport: int, dport: int) -> str:
    if proto in (6, 17):
        return f"sport={sport} dport={dport}"
    if proto in (1, 58):  # ICMP: the tuple's ports are the echo id and the message type; only
        return f"type={dport} code=0 id={sport}"  # queries are tracked, and their code is 0
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
    for family, f in snap.get("fragments", {}).items():
        lines.append(f"fragments {family}: " + " ".join(f"{k}={v}" for k, v in f.items()))
    return "\n".join(lines)
