"""Prometheus metrics: one snapshot of the C core per scrape, served over HTTP.

`snapshot()` reads everything at once: the engine's counters (Engine.stats), its table by protocol
and state (Engine.by_state, one walk of the table), the daemon's per-queue counters and the
kernel's view of the queue (/proc/net/netfilter/nfnetlink_queue).  `Collector` turns one snapshot
into metric families on every scrape; nothing is counted per packet in Python.  The same snapshot
is what `fwd ctl stats` shows.  `Exporter` serves the metrics from a thread of its own, bounded
in connections, time and request size, so a scrape never blocks the packet loop and idle or
hostile clients cannot pin threads or memory; the table walk runs in C with the GIL released.

Conventions: `fwd_` prefix, `_total` counters, seconds, the lock class as label `class`, low
cardinality (labels: lock class, protocol/state, policy rule, queue number).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any, Callable, Iterator, Mapping

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector,
                               generate_latest)
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.utils import floatToGoString

from fwd import __version__, helper_config, _core
from fwd.config import PolicyConfig

# /proc/net/netfilter/nfnetlink_queue, through self/ (/proc/net is a link to it, hidden where
# procfs is mounted with subset=pid, as systemd's ProcSubset=pid does).
NFQUEUE_PROC = "/proc/self/net/netfilter/nfnetlink_queue"
# Columns of NFQUEUE_PROC (one line per bound queue of this network namespace), as the kernel's
# nfnetlink_queue seq_show writes them.
NFQUEUE_FIELDS = ("queue", "portid", "queue_total", "copy_mode", "copy_range", "queue_dropped",
                  "user_dropped", "id_sequence")
# Bounds of the exporter against misbehaving local clients (see Exporter).
REQUEST_TIMEOUT = 5.0  # seconds to send the request, and again to take the answer
MAX_CLIENTS = 32       # connections at once
MAX_REQUEST = 8192     # bytes of request line and headers
DEFAULT_RULE = "(default)"  # the `rule` label of packets no policy rule matched

# Engine.stats()["ct"] counters exported one metric each: name -> help.
CT_COUNTERS = {
    "found": "Packets that matched an existing connection",
    "new": "Connections created (for accepted packets that start one)",
    "insert": "Connections inserted into the table",
    "insert_failed": "Connections another worker had inserted first (a race; its entry is used)",
    "drop": "Packets dropped because their connection could not be created (table full, "
            "nothing to evict)",
    "related": "ICMP/ICMPv6 errors that quote a tracked connection",
    "untracked": "Packets that are never tracked (IPv6 neighbour discovery, router messages)",
    "expect_new": "Connections created by an expectation (RELATED until a reply)",
    "helper_errors": "Packets a helper could not parse (they got the helper's on_error verdict)",
    "ifname_errors": "Batches decided without interface names (the rtnetlink link map could not "
                     "be read): rules naming an interface matched none of their packets",
}
# Engine.stats()["expect"] counters: name -> help (fwd_expect_<name>_total).
EXPECT_COUNTERS = {
    "created": "Expectations created by helpers",
    "matched": "Expectations a new connection matched (used up unless permanent)",
    "expired": "Expectations that timed out unused",
    "flushed": "Expectations removed by their helper (BYE, failure, re-INVITE) or with their "
               "master connection",
    "evicted": "Expectations pushed out by a newer one of their class (max_expected)",
    "refused": "Expectations refused: the table was full (conntrack.expect_max)",
}
# Engine.stats()["helpers"][i] counters: name -> help (fwd_helper_<name>_total).
HELPER_COUNTERS = {
    "packets": "Packets with payload the helper read",
    "messages": "Messages the helper parsed",
    "parse_errors": "Packets the helper could not parse (or that overflowed its buffer)",
    "exp_created": "Expectations the helper created",
    "exp_evicted": "Expectations of the helper evicted by newer ones",
    "exp_refused": "Expectations of the helper refused (table full or class limit 0)",
}
# Engine.stats() top-level counters: name -> help.
TABLE_COUNTERS = {
    "early_drop": "Unassured connections evicted to make room for a new one in a full table",
    "delete": "Connections removed from the table, for any reason (expiry, eviction, a SYN "
              "reopening a closed one, fwd ctl delete/flush)",
    "gc_removed": "Expired connections the garbage collector removed (counted in delete too)",
}
INVALID_REASONS = ("truncated", "malformed", "fragment", "checksum", "state")


def read_nfqueue(path: str = NFQUEUE_PROC) -> dict[int, dict[str, int]]:
    """The kernel's counters of every queue bound in this network namespace: {queue: {field:
    value}} with the fields of NFQUEUE_FIELDS; {} when the file is absent (module not loaded)."""
    try:
        with open(path, encoding="ascii") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return {}
    queues = {}
    for line in lines:
        values = dict(zip(NFQUEUE_FIELDS, map(int, line.split())))
        queues[values["queue"]] = values
    return queues


def snapshot(engine: _core.Engine, policy: PolicyConfig | None = None,
             queues: Mapping[int, Mapping[str, int]] | None = None) -> dict[str, Any]:
    """Everything exported, read once, as plain JSON-able data.  `policy` names the rules whose
    hits Engine.stats() counts (None: no per-rule verdicts); `queues` holds the daemon's own
    counters per queue number ({"packets": n, "batches": n})."""
    stats = engine.stats()
    connections = engine.by_state()
    # Every class of every configured helper, so that the series exist while they are 0.
    expectations = {(h["name"], c): 0 for h in stats["helpers"]
                    for c in helper_config.load(h["name"]).CLASSES}
    for x in engine.expectations(0.0):
        expectations[x["helper"], x["class"]] = expectations.get((x["helper"], x["class"]), 0) + 1
    rules = None
    if policy is not None:
        named = [(r.name, r.verdict) for r in policy.rules] + [(DEFAULT_RULE, policy.default)]
        # A reload between reading the policy and the counters changes their number: leave the
        # rules out of this one snapshot rather than mislabel them.
        if len(named) == len(stats["rule_hits"]):
            rules = [{"rule": name, "verdict": verdict, "hits": hits}
                     for (name, verdict), hits in zip(named, stats["rule_hits"])]
    kernel = read_nfqueue() if queues else {}
    return {
        "version": __version__,
        "stats": stats,
        "connections": connections,
        "expectations": [{"helper": h, "class": c, "count": n}
                         for (h, c), n in sorted(expectations.items())],
        "rules": rules,
        "queues": [{"queue": num, **counters, "kernel": kernel.get(num)}
                   for num, counters in sorted((queues or {}).items())],
    }


class Collector:
    """A prometheus_client collector: every collect() takes one snapshot from `source`."""

    def __init__(self, source: Callable[[], dict[str, Any]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        snap = self.source()
        stats = snap["stats"]
        info = GaugeMetricFamily("fwd_build_info", "fwd version (always 1)", labels=["version"])
        info.add_metric([snap["version"]], 1)
        yield info
        yield from _lock_metrics(stats["locks"], stats["wait_hist_bounds_ns"])
        yield from _table_metrics(stats, snap["connections"])
        if snap["rules"] is not None:
            yield _family(CounterMetricFamily, "fwd_verdicts",
                          "Packets decided, by the policy rule that matched (since the policy "
                          "was last loaded)", ["rule", "verdict"],
                          [([r["rule"], r["verdict"]], r["hits"]) for r in snap["rules"]])
        yield from _queue_metrics(snap["queues"])
        yield from _expect_metrics(stats, snap["expectations"])
        if "fragments" in snap:  # the daemon's namespace (fwd.fragments)
            yield from _fragment_metrics(snap["fragments"])
        if "reload" in snap:  # the daemon's: not in a snapshot of a bare engine
            yield GaugeMetricFamily("fwd_config_last_reload_success",
                                    "1 if the last reload applied the file (or none was tried "
                                    "since start), 0 if it failed", value=snap["reload"]["success"])
            yield GaugeMetricFamily("fwd_config_last_reload_success_timestamp_seconds",
                                    "When a reload last applied the file (or fwd started), "
                                    "Unix time",
                                    value=snap["reload"]["timestamp"])


# fwd.fragments.read() keys exported per family: key -> (metric family class, name, help).
FRAGMENT_METRICS = {
    "reassembled": (CounterMetricFamily, "fwd_fragments_reassembled",
                    "Datagrams the kernel reassembled in front of the queue (IPv4 only: the "
                    "kernel does not count the IPv6 conntrack defrag's)"),
    "failed": (CounterMetricFamily, "fwd_fragments_failed",
               "Reassemblies that failed and whose fragments were dropped (timed out, over the "
               "memory limit, malformed or overlapping; for IPv6 the kernel counts only the "
               "timed out)"),
    "timed_out": (CounterMetricFamily, "fwd_fragments_timed_out",
                  "Reassemblies dropped incomplete after fragments.timeout"),
    "memory": (GaugeMetricFamily, "fwd_fragments_memory_bytes",
               "Memory held in incomplete datagrams (IPv4 only: the kernel shows none for IPv6)"),
    "memory_limit": (GaugeMetricFamily, "fwd_fragments_memory_limit_bytes",
                     "Memory above which new fragments are dropped (fragments.memory)"),
    "timeout": (GaugeMetricFamily, "fwd_fragments_timeout_seconds",
                "Seconds a fragmented datagram has to complete (fragments.timeout)"),
}


def _fragment_metrics(families: dict[str, dict[str, int]]) -> Iterator[Metric]:
    for key, (cls, name, doc) in FRAGMENT_METRICS.items():
        yield _family(cls, name, f"{doc}; this network namespace's, from the kernel",
                      ["family"], [([family], values[key])
                                   for family, values in families.items() if key in values])


def _expect_metrics(stats: dict[str, Any], live: list[dict[str, Any]]) -> Iterator[Metric]:
    yield GaugeMetricFamily("fwd_expect_entries", "Expectations waiting to be used",
                            value=stats["expect"]["entries"])
    yield GaugeMetricFamily("fwd_expect_max_entries", "Expectation table capacity",
                            value=stats["expect"]["max"])
    yield _family(GaugeMetricFamily, "fwd_expectations", "Expectations by helper and class",
                  ["helper", "class"], [([x["helper"], x["class"]], x["count"]) for x in live])
    for key, doc in EXPECT_COUNTERS.items():
        yield CounterMetricFamily(f"fwd_expect_{key}", doc, value=stats["expect"][key])
    for key, doc in HELPER_COUNTERS.items():
        yield _family(CounterMetricFamily, f"fwd_helper_{key}", doc, ["helper"],
                      [([h["name"]], h[key]) for h in stats["helpers"]])


def _family(cls, name: str, doc: str, labels: list[str], values: list[tuple[list[str], float]]):
    family = cls(name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


def _lock_metrics(locks: dict[str, dict], bounds_ns: list[int]) -> Iterator[Metric]:
    def per_class(key: str, scale: float = 1.0) -> list[tuple[list[str], float]]:
        return [([cls], s[key] * scale) for cls, s in locks.items()]

    yield _family(GaugeMetricFamily, "fwd_locks", "Locks in the class", ["class"],
                  per_class("count"))
    yield _family(CounterMetricFamily, "fwd_lock_acquisitions", "Lock acquisitions", ["class"],
                  per_class("acquisitions"))
    yield _family(CounterMetricFamily, "fwd_lock_contended",
                  "Lock acquisitions that found the lock held and had to wait", ["class"],
                  per_class("contended"))
    yield _family(CounterMetricFamily, "fwd_lock_hold_seconds", "Time locks were held",
                  ["class"], per_class("hold_ns", 1e-9))
    wait = HistogramMetricFamily(
        "fwd_lock_wait_seconds", "Time a contended acquisition waited for its lock "
        "(uncontended acquisitions do not wait and are not observed)", labels=["class"])
    bounds = [floatToGoString(b * 1e-9) for b in bounds_ns] + ["+Inf"]
    for cls, s in locks.items():
        cumulative, buckets = 0, []
        for le, n in zip(bounds, s["wait_hist"], strict=True):
            cumulative += n
            buckets.append((le, cumulative))
        wait.add_metric([cls], buckets, s["wait_ns"] * 1e-9)
    yield wait


def _table_metrics(stats: dict[str, Any], by_state: dict[str, dict[str, int]]
                   ) -> Iterator[Metric]:
    gauges = {
        "fwd_conntrack_entries": ("Connections in the table", stats["entries"]),
        "fwd_conntrack_max_entries": ("Table capacity (beyond it: early drop, then refusal)",
                                      stats["max_entries"]),
        "fwd_conntrack_buckets": ("Hash buckets", stats["buckets"]),
        "fwd_conntrack_shards": ("Lock shards of the table", stats["shards"]),
        "fwd_conntrack_shard_entries_max": ("Connections in the fullest shard",
                                            stats["max_shard_entries"]),
        "fwd_conntrack_shard_entries_mean": ("Mean connections per shard",
                                             stats["entries"] / stats["shards"]),
    }
    for name, (doc, value) in gauges.items():
        yield GaugeMetricFamily(name, doc, value=value)
    yield _family(GaugeMetricFamily, "fwd_conntrack_connections",
                  "Connections in the table by protocol and state (TCP: its state; others: "
                  "UNREPLIED or REPLIED)", ["proto", "state"],
                  [([proto, state], n) for proto, states in by_state.items()
                   for state, n in states.items()])
    ct = stats["ct"]
    for key, doc in CT_COUNTERS.items():
        yield CounterMetricFamily(f"fwd_conntrack_{key}", doc, value=ct[key])
    yield _family(CounterMetricFamily, "fwd_conntrack_invalid",
                  "Packets in state invalid, by reason (state: out of state or not trackable)",
                  ["reason"], [([r], ct[f"invalid_{r}"]) for r in INVALID_REASONS])
    for key, doc in TABLE_COUNTERS.items():
        yield CounterMetricFamily(f"fwd_conntrack_{key}", doc, value=stats[key])


def _queue_metrics(queues: list[dict[str, Any]]) -> Iterator[Metric]:
    def per_queue(value: Callable[[dict], int | None]) -> list[tuple[list[str], float]]:
        return [([str(q["queue"])], v) for q in queues if (v := value(q)) is not None]

    def kernel(field: str) -> Callable[[dict], int | None]:
        return lambda q: q["kernel"] and q["kernel"][field]

    yield _family(CounterMetricFamily, "fwd_queue_packets", "Packets read from the queue",
                  ["queue"], per_queue(lambda q: q["packets"]))
    yield _family(CounterMetricFamily, "fwd_queue_batches",
                  "Batches decided (one engine call each)", ["queue"],
                  per_queue(lambda q: q["batches"]))
    yield _family(GaugeMetricFamily, "fwd_queue_length",
                  "Packets waiting in the kernel queue for a verdict", ["queue"],
                  per_queue(kernel("queue_total")))
    yield _family(CounterMetricFamily, "fwd_queue_kernel_drops",
                  "Packets the kernel dropped because the queue was full", ["queue"],
                  per_queue(kernel("queue_dropped")))
    yield _family(CounterMetricFamily, "fwd_queue_user_drops",
                  "Packets the kernel could not deliver to fwd (netlink socket buffer full)",
                  ["queue"], per_queue(kernel("user_dropped")))
    yield _family(GaugeMetricFamily, "fwd_worker_stalled",
                  "1 while the queue's native worker is stuck in one batch (no progress, "
                  "packets waiting): the systemd watchdog is not fed", ["queue"],
                  per_queue(lambda q: q.get("stalled")))
    yield _family(CounterMetricFamily, "fwd_queue_socket_overflows",
                  "Times the native worker's socket reported lost messages (ENOBUFS)",
                  ["queue"], per_queue(lambda q: q.get("socket_overflows")))


class Exporter:
    """The metrics HTTP server on (host, port), on an event loop in a thread of its own (so a
    scrape never waits for the packet loop, nor the packet loop for a scrape); close() stops it.

    Bounded against local clients that misbehave: at most `max_clients` connections (a new one
    pushes out the oldest that has not yet sent its request, so idle connections cannot lock
    scrapes out), `timeout` seconds to send the request and again to take the answer, requests
    (line and headers) of at most MAX_REQUEST bytes, and one table walk at a time: requests that
    arrive while a scrape is being made share it.  Two threads in all, however many clients."""

    def __init__(self, host: str, port: int, source: Callable[[], dict[str, Any]], *,
                 timeout: float = REQUEST_TIMEOUT, max_clients: int = MAX_CLIENTS) -> None:
        registry = CollectorRegistry()
        registry.register(Collector(source))
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, memory, open fds
        self._scrape = lambda: generate_latest(registry)
        self.timeout = timeout
        self.max_clients = max_clients
        self.refused = 0  # connections pushed out or turned away to stay within max_clients
        self._clients: dict[asyncio.Task, bool] = {}  # oldest first -> still reading its request
        self._scraping: asyncio.Future | None = None
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family)  # errors at once, here
        self.port: int = sock.getsockname()[1]
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fwd-metrics-scrape")
        self._loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name="fwd-metrics", daemon=True)
        self.thread.start()
        self._server = asyncio.run_coroutine_threadsafe(asyncio.start_server(
            self._client, sock=sock, limit=MAX_REQUEST), self._loop).result()

    def _serve(self) -> None:
        self._loop.run_forever()
        self._loop.close()

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self.thread.join()
        self._pool.shutdown()

    def _make_room(self) -> bool:
        """Keep within max_clients by closing the oldest connection still reading its request;
        False when every connection has sent one (the new connection is turned away)."""
        if len(self._clients) < self.max_clients:
            return True
        self.refused += 1
        for task, reading in self._clients.items():
            if reading:
                task.cancel()
                del self._clients[task]
                return True
        return False

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if not self._make_room():
            writer.close()
            return
        self._clients[task] = True
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout)
            except asyncio.LimitOverrunError:
                await self._answer(writer, 431, b"request too large\n")
                return
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return
            self._clients[task] = False
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method not in (b"GET", b"HEAD"):
                await self._answer(writer, 405, b"only GET\n")
            elif path not in (b"/", b"/metrics"):
                await self._answer(writer, 404, b"metrics are at /metrics\n")
            else:
                await self._answer(writer, 200, await self._page(), method == b"HEAD")
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self._clients.pop(task, None)
            writer.close()

    async def _page(self) -> bytes:
        """The exposition page; a scrape already being made is shared."""
        if self._scraping is None:
            self._scraping = asyncio.get_running_loop().run_in_executor(self._pool, self._scrape)
            self._scraping.add_done_callback(lambda _: setattr(self, "_scraping", None))
        return await asyncio.shield(self._scraping)

    async def _answer(self, writer: asyncio.StreamWriter, status: int, body: bytes,
                      head_only: bool = False) -> None:
        ctype = CONTENT_TYPE_LATEST if status == 200 else "text/plain; charset=utf-8"
        writer.write(f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                     f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + (b"" if head_only else body))
        await asyncio.wait_for(writer.drain(), self.timeout)
