"""The metrics collector on an engine of its own: what a scrape exports (names, labels, values
after known traffic), the lock metrics under two-worker load, the kernel queue file, the HTTP
exporter, and the [metrics]/[control] config sections."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fwd import __version__, _core, config, engine, metrics
from tests.pkt import C4, C6, S4, S6, batch, echo, tcp, udp

POLICY = config.parse({"policy": {"default": "accept", "rule": [
    {"name": "no-dns", "proto": "udp", "dport": 53, "verdict": "drop"},
    {"name": "web", "proto": "tcp", "dport": 80, "verdict": "accept"},
]}}).policy


def new_engine(**kw) -> _core.Engine:
    eng = _core.Engine(**{"shards": 16, "buckets": 64, **kw})
    engine.configure(eng, config.Config(policy=POLICY))
    return eng


def scrape(eng: _core.Engine, queues=None) -> dict[tuple[str, tuple], float]:
    """One scrape through prometheus_client's exposition and parser: {(sample name, sorted
    labels): value}."""
    registry = CollectorRegistry()
    registry.register(metrics.Collector(lambda: metrics.snapshot(eng, POLICY, queues)))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def families(eng: _core.Engine) -> dict[str, str]:
    registry = CollectorRegistry()
    registry.register(metrics.Collector(lambda: metrics.snapshot(eng, POLICY)))
    return {f.name: f.type for f in text_string_to_metric_families(
        generate_latest(registry).decode())}


def value(samples, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_scrape_reflects_traffic():
    eng = new_engine()
    eng.process(batch(
        tcp(C4, S4, 40000, 80, "S"), tcp(S4, C4, 80, 40000, "SA"), tcp(C4, S4, 40000, 80, "A"),
        udp(C4, S4, 5000, 53),                          # dropped by "no-dns": no connection
        udp(C6, S6, 5001, 1234), udp(S6, C6, 1234, 5001),
        echo(C4, S4, 7),
        tcp(C4, S4, 40001, 22, "FA"),                   # FIN, no connection: invalid, default accept
    ), 1.0)
    s = scrape(eng, {3: {"packets": 8, "batches": 1, "stalled": False},
                     4: {"packets": 0, "batches": 0, "stalled": True}})

    assert value(s, "fwd_build_info", version=__version__) == 1
    assert value(s, "fwd_conntrack_entries") == 3
    assert value(s, "fwd_conntrack_max_entries") == 262144
    assert value(s, "fwd_conntrack_shards") == 16
    assert value(s, "fwd_conntrack_shard_entries_mean") == 3 / 16
    assert 1 <= value(s, "fwd_conntrack_shard_entries_max") <= 3
    assert value(s, "fwd_conntrack_connections", proto="tcp", state="ESTABLISHED") == 1
    assert value(s, "fwd_conntrack_connections", proto="udp", state="REPLIED") == 1
    assert value(s, "fwd_conntrack_connections", proto="icmp", state="UNREPLIED") == 1
    assert value(s, "fwd_conntrack_connections", proto="tcp", state="SYN_SENT") == 0
    assert value(s, "fwd_conntrack_insert_total") == 3
    assert value(s, "fwd_conntrack_ifname_errors_total") == 0  # the policy names no interface
    assert value(s, "fwd_conntrack_found_total") == 3
    assert value(s, "fwd_conntrack_invalid_total", reason="state") == 1
    assert value(s, "fwd_conntrack_invalid_total", reason="fragment") == 0
    assert value(s, "fwd_verdicts_total", rule="no-dns", verdict="drop") == 1
    # The SYN and the ACK to port 80; the SYN-ACK comes from port 80 and falls to the default.
    assert value(s, "fwd_verdicts_total", rule="web", verdict="accept") == 2
    assert value(s, "fwd_verdicts_total", rule="(default)", verdict="accept") == 5
    assert value(s, "fwd_queue_packets_total", queue="3") == 8
    assert value(s, "fwd_queue_batches_total", queue="3") == 1
    assert value(s, "fwd_worker_stalled", queue="3") == 0
    assert value(s, "fwd_worker_stalled", queue="4") == 1
    assert value(s, "fwd_lock_acquisitions_total", **{"class": "shard"}) > 0
    assert value(s, "fwd_locks", **{"class": "shard"}) == 16


def test_names_follow_the_conventions():
    types = families(new_engine())
    assert all(name.startswith("fwd_") for name in types)
    # The parser strips _total from counters; every counter was exposed with it (checked by
    # prometheus_client), and times are in seconds.
    assert types["fwd_lock_acquisitions"] == "counter"
    assert types["fwd_lock_hold_seconds"] == "counter"
    assert types["fwd_lock_wait_seconds"] == "histogram"
    assert types["fwd_conntrack_entries"] == "gauge"
    assert not [n for n in types if "_ns" in n or "nanoseconds" in n]


def lock(samples, name: str, cls: str = "shard") -> float:
    return value(samples, name, **{"class": cls})


def wait_buckets(samples, cls: str = "shard") -> list[tuple[float, float]]:
    return sorted((float(dict(labels)["le"]), v) for (name, labels), v in samples.items()
                  if name == "fwd_lock_wait_seconds_bucket" and dict(labels)["class"] == cls)


def test_lock_metrics_under_two_worker_load():
    # Two threads deciding batches as workers 0 and 1 of one engine: acquisitions grow.
    eng = new_engine(shards=1024, buckets=65536)
    before = lock(scrape(eng), "fwd_lock_acquisitions_total")

    def work(worker: int) -> None:
        for i in range(50):
            eng.process(batch(*(udp(C4, S4, 1024 + worker * 5000 + i * 50 + j, 9999)
                                for j in range(50))), 1.0, worker=worker)

    threads = [threading.Thread(target=work, args=(w,)) for w in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = scrape(eng)
    assert value(s, "fwd_conntrack_entries") == 5000
    assert lock(s, "fwd_lock_acquisitions_total") >= before + 5000
    # No helper, no expectations: new connections never take the expectation lock.
    assert lock(s, "fwd_lock_acquisitions_total", "expect") == 0


def test_contention_one_shard_versus_1024():
    # The same two-thread table workload (Engine.stress: insert, look up, kill) on one central
    # lock and on 1024 shard locks, in interleaved runs of ~50 ms.  Measured here per run:
    # ~18000-40000 vs ~100-500 contended acquisitions.  Contention needs both threads running
    # at once, which busy cores only sometimes allow: runs go on (at most 30) until the central
    # lock has seen 20000 contended acquisitions, the shards the same number of runs; even with
    # one core kept busy by another process the ratio stayed above 3.
    engines = {shards: _core.Engine(shards=shards, buckets=65536) for shards in (1, 1024)}
    for _ in range(30):
        for eng in engines.values():
            eng.stress(2, 20000, 2)
        if engines[1].stats()["locks"]["shard"]["contended"] >= 20000:
            break
    results = {shards: scrape(eng) for shards, eng in engines.items()}
    one, many = results[1], results[1024]
    assert lock(one, "fwd_lock_acquisitions_total") > 0
    assert lock(many, "fwd_lock_acquisitions_total") > 0
    assert lock(one, "fwd_lock_contended_total") > 1000
    assert lock(one, "fwd_lock_contended_total") > 2 * lock(many, "fwd_lock_contended_total")
    # The wait histogram observes exactly the contended acquisitions, cumulatively.
    buckets = wait_buckets(one)
    assert [le for le, _ in buckets][-1] == float("inf")
    assert all(a <= b for (_, a), (_, b) in zip(buckets, buckets[1:]))
    assert buckets[-1][1] == lock(one, "fwd_lock_wait_seconds_count") \
        == lock(one, "fwd_lock_contended_total")
    assert lock(one, "fwd_lock_wait_seconds_sum") > 0


def test_rules_left_out_while_policy_and_counters_disagree():
    eng = new_engine()
    other = config.parse({"policy": {"rule": [{"name": "only", "verdict": "accept"}]}}).policy
    snap = metrics.snapshot(eng, other)
    assert snap["rules"] is None  # 2 names for 3 counters: a reload in between
    assert metrics.snapshot(eng, POLICY)["rules"] == [
        {"rule": "no-dns", "verdict": "drop", "hits": 0},
        {"rule": "web", "verdict": "accept", "hits": 0},
        {"rule": "(default)", "verdict": "accept", "hits": 0}]


def test_read_nfqueue(tmp_path):
    # The kernel's format: queue portid waiting copy_mode copy_range queue_dropped user_dropped
    # id_sequence 1
    proc = tmp_path / "nfnetlink_queue"
    proc.write_text("    3  12345     5 2  4016    17     2      999 1\n"
                    "    7  12346     0 2  4016     0     0        0 1\n")
    q = metrics.read_nfqueue(str(proc))
    assert sorted(q) == [3, 7]
    assert (q[3]["queue_total"], q[3]["queue_dropped"], q[3]["user_dropped"]) == (5, 17, 2)
    assert metrics.read_nfqueue(str(tmp_path / "absent")) == {}


def test_exporter_serves_http():
    eng = new_engine()
    exporter = metrics.Exporter("127.0.0.1", 0, lambda: metrics.snapshot(eng, POLICY))
    try:
        port = exporter.port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert f'fwd_build_info{{version="{__version__}"}} 1.0' in text
        assert "process_cpu_seconds_total" in text
    finally:
        exporter.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def get(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_exporter_under_idle_and_hostile_clients():
    """Hundreds of idle connections pin neither threads nor memory and do not lock scrapes out;
    a client that stops mid-request is closed after the timeout; an endless header is refused."""
    eng = new_engine()
    threads_before = threading.active_count()
    exporter = metrics.Exporter("127.0.0.1", 0, lambda: metrics.snapshot(eng, POLICY),
                                timeout=1.0)
    idle: list[socket.socket] = []
    try:
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", exporter.port))
            s.sendall(b"GET /metr")  # and nothing more
            idle.append(s)
            if i % 50 == 49:  # scrapes are served all along, promptly
                started = time.monotonic()
                status, text = get(exporter.port)
                assert status == 200 and "fwd_build_info" in text
                assert time.monotonic() - started < 1.0
        assert threading.active_count() - threads_before <= 2  # the loop and the scraper
        assert len(exporter._clients) <= metrics.MAX_CLIENTS
        assert exporter.refused >= 300 - metrics.MAX_CLIENTS
        # The most recent idle connection is closed after `timeout` without an answer.
        idle[-1].settimeout(5)
        started = time.monotonic()
        assert idle[-1].recv(100) == b""
        assert 0.5 < time.monotonic() - started < 3
        # An endless request header: 431, not an ever-growing buffer.
        with socket.create_connection(("127.0.0.1", exporter.port), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nX-Junk: " + b"a" * (2 * metrics.MAX_REQUEST))
            assert s.recv(100).startswith(b"HTTP/1.1 431 ")
        assert get(exporter.port)[0] == 200
        assert get(exporter.port, "/other")[0] == 404
    finally:
        for s in idle:
            s.close()
        exporter.close()
    assert threading.active_count() == threads_before


# --- [metrics] and [control] config ----------------------------------------------------------

@pytest.mark.parametrize("listen,address", [
    ("127.0.0.1:9477", ("127.0.0.1", 9477)),
    ("[::1]:9100", ("::1", 9100)),
    ("localhost:65535", ("localhost", 65535)),
    ("", None),
])
def test_metrics_listen(listen, address):
    assert config.parse({"metrics": {"listen": listen}}).metrics.address == address


@pytest.mark.parametrize("data,key,message", [
    ({"metrics": {"listen": "9477"}}, "metrics.listen", 'must be "host:port"'),
    ({"metrics": {"listen": "127.0.0.1:0"}}, "metrics.listen", "port 1..65535"),
    ({"metrics": {"listen": "::1:9477"}}, "metrics.listen", '"[address]:port"'),
    ({"metrics": {"listen": "[nonsense]:1"}}, "metrics.listen", "got \"[nonsense]:1\""),
    ({"metrics": {"listen": 9477}}, "metrics.listen", "got 9477"),
    ({"metrics": {"port": 1}}, "metrics.port", "unknown key"),
    ({"control": {"socket": "fwd.sock"}}, "control.socket", "absolute file path"),
    ({"control": {"socket": "/run/fwd/"}}, "control.socket", "absolute file path"),
    ({"control": {"socket": "/" + "x" * 107}}, "control.socket", "at most 107 bytes"),
    ({"control": {"socket": False}}, "control.socket", "got false"),
])
def test_bad_observability_config(data, key, message):
    with pytest.raises(config.ConfigError) as err:
        config.parse(data)
    assert err.value.key == key
    assert message in str(err.value)


def test_observability_defaults():
    cfg = config.parse({})
    assert cfg.metrics.listen == "127.0.0.1:9477"
    assert cfg.control.socket == "/run/fwd/fwd.sock"
    assert config.parse({"control": {"socket": ""}}).control.socket == ""


def test_dashboard_puts_what_an_operator_looks_at_first():
    """The first row answers "is fwd doing its job": verdicts, every kind of drop, table fill,
    queue health (length, stalled workers, failed reload); lock internals come last."""
    import json
    from pathlib import Path

    dash = json.loads((Path(__file__).parents[1] / "etc" / "grafana-fwd.json").read_text())
    rows: list[tuple[str, list[str]]] = []
    for p in dash["panels"]:
        if p["type"] == "row":
            rows.append((p["title"], []))
        else:
            rows[-1][1].extend(t["expr"] for t in p["targets"])
    first = " ".join(rows[0][1])
    for metric in ("fwd_verdicts_total", "fwd_queue_kernel_drops_total", "fwd_conntrack_drop_total",
                   "fwd_expect_refused_total", "fwd_conntrack_max_entries", "fwd_queue_length",
                   "fwd_worker_stalled", "fwd_config_last_reload_success"):
        assert metric in first, metric
    assert "fwd_lock" not in first
    assert rows[-1][0].startswith("Locks") and all("fwd_lock" not in e for _, exprs in rows[:-1]
                                                   for e in exprs)
    # Panels sit below their row and never overlap.
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        new = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not new & cells and g["x"] + g["w"] <= 24, p["title"]
        cells |= new


def test_fragment_metrics_are_the_namespaces_kernel_figures():
    """The daemon's snapshot carries fwd.fragments.read(): exported per family, the limits as
    the namespace's sysctls say (read here from this namespace, never written)."""
    from fwd import fragments

    snap = {**metrics.snapshot(new_engine(), POLICY), "fragments": fragments.read()}
    registry = CollectorRegistry()
    registry.register(metrics.Collector(lambda: snap))
    families_ = {f.name: f for f in text_string_to_metric_families(
        generate_latest(registry).decode())}
    assert families_["fwd_fragments_failed"].type == "counter"
    assert families_["fwd_fragments_timeout_seconds"].type == "gauge"
    with open(f"{fragments.SYSCTL}/net/ipv4/ipfrag_time") as f:
        ipfrag_time = int(f.read())
    timeouts = {s.labels["family"]: s.value
                for s in families_["fwd_fragments_timeout_seconds"].samples}
    assert timeouts["ipv4"] == ipfrag_time
    failed = {s.labels["family"] for s in families_["fwd_fragments_failed"].samples}
    assert failed == {"ipv4", "ipv6"}  # counters for both, whether a defrag is loaded or not
