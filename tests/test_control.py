"""The control server against a big table and clients that misbehave, in this process (no
daemon, no root): listings come in pieces and filtered in C, clients that do not read are
dropped, and neither memory nor time grows with them."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import tracemalloc
from contextlib import contextmanager
from typing import Any, Iterator

import pytest

from fwd import _core, control, metrics

CONNS = 200_000


class Daemon:
    """What ControlServer needs of the daemon."""

    def __init__(self, engine: _core.Engine) -> None:
        self.engine = engine
        self.last_reload = "none"

    def snapshot(self) -> dict[str, Any]:
        return metrics.snapshot(self.engine)

    def reload(self) -> None:
        pass


@pytest.fixture(scope="module")
def big_engine() -> _core.Engine:
    engine = _core.Engine(shards=64, buckets=1 << 16, max_entries=1 << 18)
    engine.stress(threads=2, conns=CONNS // 2, keep=True)  # UDP connections, left in the table
    assert engine.stats()["entries"] == CONNS
    return engine


@contextmanager
def serving(engine: _core.Engine, path: str) -> Iterator[control.ControlServer]:
    """A ControlServer at `path` on an event loop in a thread, as in the daemon."""
    loop = asyncio.new_event_loop()
    server = control.ControlServer(Daemon(engine), path)
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)  # never holds pytest up
    thread.start()

    async def stop() -> None:
        server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        yield server
    finally:
        try:
            asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        loop.close()


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_listing_streams_in_pieces(big_engine, tmp_path):
    path = str(tmp_path / "ctl.sock")
    with serving(big_engine, path):
        started = time.monotonic()
        lines = list(control.responses(path, {"command": "conntrack.list"}, timeout=60))
        took = time.monotonic() - started
        print(f"{CONNS} connections listed in {took:.2f} s, {len(lines)} lines")
        assert all(r["ok"] for r in lines)
        assert [bool(r.get("more")) for r in lines] == [True] * (len(lines) - 1) + [False]
        # About CHUNK per line (a piece ends with a bucket: a few more).
        assert max(len(r["result"]) for r in lines) < control.CHUNK + 16
        seen = {(c["src"], c["sport"]) for r in lines for c in r["result"]}
        assert len(seen) == CONNS
        assert took < 60
        # call() joins the pieces.
        assert len(control.call(path, {"command": "conntrack.list"}, timeout=60)["result"]) \
            == CONNS


def test_filtered_listing_never_holds_the_table_in_python(big_engine, tmp_path):
    path = str(tmp_path / "ctl.sock")
    with serving(big_engine, path):
        tracemalloc.start()
        try:
            none = control.call(path, {"command": "conntrack.list",
                                       "filter": {"proto": "tcp"}}, timeout=60)
            some = control.call(path, {"command": "conntrack.list",
                                       "filter": {"src": "10.1.20.0/24", "dport": 53}},
                                timeout=60)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert none == {"ok": True, "result": []}
    assert some["ok"] and 0 < len(some["result"]) < 2000
    assert {c["src"].rsplit(".", 1)[0] for c in some["result"]} == {"10.1.20"}
    assert peak < 4 << 20  # bytes: dicts of 200k connections would be hundreds of MB


def test_clients_that_do_not_read(big_engine, tmp_path, monkeypatch):
    """100 clients ask for the whole table and never read: the daemon grows by little, turns
    away those beyond MAX_CLIENTS, drops the others after SEND_TIMEOUT, then serves again."""
    monkeypatch.setattr(control, "SEND_TIMEOUT", 1.0)
    path = str(tmp_path / "ctl.sock")
    request = control._line({"command": "conntrack.list"})
    with serving(big_engine, path) as server:
        control.call(path, {"command": "conntrack.list", "filter": {"proto": "tcp"}})
        before = rss()
        hogs = []
        for _ in range(100):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(path)
            s.sendall(request)
            hogs.append(s)
        time.sleep(0.5)
        assert server.clients <= 100
        grown = rss() - before
        print(f"rss grown by {grown >> 20} MiB with 100 clients not reading")
        assert grown < 64 << 20, f"{grown >> 20} MiB"
        # Beyond MAX_CLIENTS: told so at once.
        busy = [s for s in hogs[control.MAX_CLIENTS:] if b"busy" in s.recv(200)]
        assert len(busy) == 100 - control.MAX_CLIENTS
        # The others are dropped once they have not read for SEND_TIMEOUT.
        deadline = time.monotonic() + 15
        while server.clients and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.clients == 0
        assert rss() - before < 64 << 20
        for s in hogs:
            s.close()
        stats = control.call(path, {"command": "stats"}, timeout=30)
        assert stats["ok"] and stats["result"]["stats"]["entries"] == CONNS


def test_idle_client_is_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(control, "CLIENT_IDLE", 0.5)
    path = str(tmp_path / "ctl.sock")
    with serving(_core.Engine(shards=1, buckets=16), path) as server:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(path)
            started = time.monotonic()
            assert s.recv(10) == b""
            assert time.monotonic() - started < 3
        assert server.clients == 0
        assert control.call(path, {"command": "expect.list"}) == {"ok": True, "result": []}


def wait_until(done, timeout: float = 5) -> bool:
    """Polls `done()` until it is true or `timeout` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
    return done()


def listening(server, read) -> threading.Thread:
    """Runs `read` (a client taking conntrack.events) in a thread, once the server has its
    listener."""
    reader = threading.Thread(target=read)
    reader.start()
    wait_until(lambda: server.listeners)
    return reader


def test_events_stream_new_and_destroy(tmp_path):
    """conntrack.events as `conntrack -E`: NEW when a connection is linked, DESTROY when it
    goes; a listener's departure stops the recording."""
    from fwd import config, engine as fwd_engine
    from tests.pkt import batch, udp

    eng = _core.Engine(shards=4, buckets=64)
    fwd_engine.configure(eng, config.Config(policy=config.parse(
        {"policy": {"default": "accept"}}).policy))
    path = str(tmp_path / "ctl.sock")
    with serving(eng, path) as server:
        stream = control.responses(path, {"command": "conntrack.events"}, timeout=10)
        got: list[dict] = []

        def read() -> None:  # until the four events of the traffic below
            for response in stream:
                got.extend(response["result"])
                if len(got) >= 4:
                    return

        reader = listening(server, read)
        eng.process(batch(udp("10.0.0.1", "10.0.0.2", 1000, 53),
                          udp("10.0.0.2", "10.0.0.1", 53, 1000),
                          udp("10.0.0.1", "10.0.0.3", 1001, 53)), time.monotonic())
        assert eng.flush() == 2
        reader.join(10)
        events = [(e["event"], e["dst"], e["sport"], e["state"]) for e in got]
        # In order of time; the flush goes through the table in bucket order.
        assert events[:2] == [("NEW", "10.0.0.2", 1000, "UNREPLIED"),
                              ("NEW", "10.0.0.3", 1001, "UNREPLIED")]
        assert sorted(events[2:]) == [("DESTROY", "10.0.0.2", 1000, "REPLIED"),
                                      ("DESTROY", "10.0.0.3", 1001, "UNREPLIED")]
        destroyed = next(e for e in got if e["event"] == "DESTROY" and e["sport"] == 1000)
        assert control.format_event(destroyed) == (
            "[DESTROY] udp      17 src=10.0.0.1 dst=10.0.0.2 sport=1000 dport=53 packets=1 "
            "src=10.0.0.2 dst=10.0.0.1 sport=53 dport=1000 packets=1 mark=0 use=2")
        stream.close()  # the client goes: so do the listener and the recording
        assert wait_until(lambda: not server.listeners)
    eng.process(batch(udp("10.0.0.1", "10.0.0.4", 1002, 53)), time.monotonic())
    assert eng.events_take(time.monotonic(), 10) == ([], 0, [])


def test_events_filtered_per_listener(tmp_path):
    """Two clients of conntrack.events at once, one with a mark filter: each gets its own
    events, matched in C, with bytes and the mark."""
    from fwd import config, engine as fwd_engine
    from tests.pkt import batch, udp

    eng = _core.Engine(shards=4, buckets=64)
    cfg = config.parse({"conntrack": {"accounting": True}, "policy": {
        "default": "accept", "rule": [{"name": "dns", "proto": "udp", "dport": 53,
                                       "verdict": "accept", "mark": 5}]}})
    fwd_engine.configure(eng, cfg)
    path = str(tmp_path / "ctl.sock")
    with serving(eng, path) as server:
        streams = [control.responses(path, {"command": "conntrack.events", "filter": f},
                                     timeout=10) for f in ({}, {"mark": "5/0xff"})]
        got: list[list[dict]] = [[], []]

        def read(i: int, want: int) -> None:
            for response in streams[i]:
                got[i].extend(response["result"])
                if len(got[i]) >= want:
                    return

        readers = [listening(server, lambda: read(0, 3))]
        readers.append(threading.Thread(target=read, args=(1, 2)))
        readers[1].start()
        assert wait_until(lambda: len(server.listeners) == 2)
        eng.process(batch(udp("10.0.0.1", "10.0.0.2", 1000, 53, b"x" * 12),
                          udp("10.0.0.1", "10.0.0.2", 1001, 80),
                          udp("10.0.0.1", "10.0.0.3", 1002, 53)), time.monotonic())
        for reader in readers:
            reader.join(10)
        for stream in streams:
            stream.close()
    assert [(e["sport"], e["mark"]) for e in got[0]] == [(1000, 5), (1001, 0), (1002, 5)]
    assert [(e["sport"], e["mark"], e["bytes_orig"]) for e in got[1]] == [(1000, 5, 40),
                                                                         (1002, 5, 29)]
    assert control.format_event(got[1][0]).endswith(
        "sport=1000 dport=53 packets=1 bytes=40 [UNREPLIED] src=10.0.0.2 dst=10.0.0.1 "
        "sport=53 dport=1000 packets=0 bytes=0 mark=5 use=2")


def test_events_filter_is_checked(tmp_path):
    path = str(tmp_path / "ctl.sock")
    with serving(_core.Engine(shards=4, buckets=64), path) as server:
        response = control.call(path, {"command": "conntrack.events", "filter": {"mark": "x"}})
        assert response["ok"] is False and response["error"].startswith("filter.mark: must be")
        assert not server.listeners


def test_events_lost_are_counted(tmp_path):
    """A burst beyond the ring: every NEW event is either delivered or counted as lost."""
    eng = _core.Engine(shards=64, buckets=1 << 15, max_entries=1 << 16)
    path = str(tmp_path / "ctl.sock")
    with serving(eng, path) as server:
        stream = control.responses(path, {"command": "conntrack.events"}, timeout=10)
        seen = {"NEW": 0, "LOST": 0}

        def read() -> None:
            for response in stream:
                for e in response["result"]:
                    seen[e["event"]] += e.get("count", 1)
                if seen["NEW"] + seen["LOST"] >= 40000:
                    return

        reader = listening(server, read)
        eng.stress(threads=2, conns=20000, keep=True)  # 40000 connections in a burst
        reader.join(30)
        stream.close()
    assert seen["NEW"] + seen["LOST"] == 40000
    assert seen["LOST"] > 0  # more than the ring holds came at once
