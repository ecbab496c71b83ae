# SPDX-License-Identifier: GPL-2.0-or-later
"""New-connection benchmark: every packet opens a connection; fwd against the kernel's conntrack.

    .venv/bin/python bench/newconn_bench.py [--quick] [--repeats N] [--protos udp,tcp] ...

Same lab as nfq_bench.py (client -- fw -- server namespaces, NFQUEUE in the fw namespace's
FORWARD chain, a sink on the server), but the sender is bench/newconn.c: raw IPv4 packets whose
every 5-tuple is new (200 source addresses of the client subnet times source ports; UDP
datagrams, or TCP SYNs whose RST answers the server drops in its OUTPUT chain).

Parts (each repeat runs every consumer on each protocol, the order rotating per repeat):
  drain   as nfq_bench's drain: the consumer is paused, --count new connections are queued, the
          consumer resumed, delivery timed at the sink.  Consumers:
            a      C accept-all, batch verdicts (the NFQUEUE ceiling; no conntrack anywhere)
            a-2q   the same on two queues
            d      fwd native, 1 queue, the bench policy (new from the client subnet, replies)
            e      fwd native, 2 queues, conntrack.shards at its default (1024)
            e-s1   the same with conntrack.shards = 1 (the seed's central lock)
            e-sip  e with the SIP helper attached (etc/helpers.d), no SIP traffic
          Lock metrics of every fwd consumer are read from its own Prometheus endpoint (in the
          fw namespace's loopback) just before and just after each drain.
  kernel  no queue: the fw namespace forwards with its own conntrack and the same policy as
          iptables rules (-P FORWARD DROP; ESTABLISHED,RELATED accept; NEW from the client
          subnet accept).  Nothing can pause the kernel, so the sender's own time per packet is
          measured with the kernel path behind it (the forwarding runs in the sender's softirq)
          and without (the fw namespace drops in raw PREROUTING, before conntrack):
            k      kernel conntrack + stateful policy, forwarding to the sink
            kp     plain forwarding, no rules (no conntrack in that namespace)
            k0     dropped at the fw namespace's raw PREROUTING: the sender's own cost
          The kernel router's CPU per new connection is t(k) - t(k0).  A consumer's is its
          drain's CPU (its threads and the softirq its verdicts run: forwarding, delivery) plus
          queueing the packets (the sender's CPU while the consumer is paused) minus t(k0):
          the same span, from the fw namespace's PREROUTING to the sink's socket.
  full    fwd (1 queue) with conntrack.max_entries = --full-max, drained with --count new UDP
          connections: rate against d of the same repeat, early drops, refusals, verdicts.
  memory  once: fwd (1 queue, max_entries above --mem-conns) takes --mem-conns new UDP
          connections (closed loop); RSS before/after and the table's entry count.
  latency once: p50/p99 round trip through d (or the kernel path) at --load of d's drain rate
          in background new connections: pings on one flow (established) and pings each from a
          new source port (new).

Everything is created inside namespaces made here and removed at exit, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nfq_bench as nb  # noqa: E402
from nfq_bench import QUEUE, BenchError, Consumer, Lab  # noqa: E402

REPO = nb.REPO
PORT = 9100                 # sink port (UDP or TCP)
METRICS_PORT = 19477        # fwd's exporter, on the fw namespace's loopback
SRC_BASE, SRCS = "10.77.1.10", 200
TUPLES = SRCS * (65536 - 1024)  # distinct 5-tuples newconn makes before repeating


# --- fwd consumers -------------------------------------------------------------------------------

def fwd_text(queues: int, shards: int | None = None, max_entries: int | None = None,
             buckets: int | None = None, sip: bool = False) -> str:
    """nfq_bench's fwd config with the exporter on, and the conntrack / helper knobs here."""
    text = nb.fwd_config_text(QUEUE, "native", queues, listen=f"127.0.0.1:{METRICS_PORT}")
    ct = [f"shards = {shards}"] if shards else []
    ct += [f"max_entries = {max_entries}"] if max_entries else []
    ct += [f"buckets = {buckets}"] if buckets else []
    if ct:
        text = "[conntrack]\n" + "\n".join(ct) + "\n\n" + text
    # The scratch dir has no helpers.d: no helper unless asked for.
    if sip:
        text = f'[helpers]\ndir = "{REPO / "etc" / "helpers.d"}"\n\n' + text
    return text


def fwd_consumer(key: str, label: str, queues: int, capacity: int = nb.FULL_QUEUE,
                 **knobs) -> Consumer:
    def argv(queue: int, scratch: Path) -> list[str]:
        path = scratch / f"fwd-{key}.toml"
        path.write_text(fwd_text(queues, **knobs))
        return [nb.PY, "-m", "fwd", "run", "--config", str(path)]
    return Consumer(key, label, queues, capacity, argv)


def consumers(full_max: int) -> dict[str, Consumer]:
    base = nb.consumers()
    all_ = [base["a"], base["a-2q"],
            fwd_consumer("d", "fwd native, 1 queue", 1),
            fwd_consumer("d-b64k", "fwd native, 1 queue, conntrack.buckets = 65536", 1,
                         buckets=65536),
            fwd_consumer("e", "fwd native, 2 queues", 2),
            fwd_consumer("e-s1", "fwd native, 2 queues, conntrack.shards = 1", 2, shards=1),
            fwd_consumer("e-sip", "fwd native, 2 queues, SIP helper attached", 2, sip=True),
            fwd_consumer("full", f"fwd native, 1 queue, max_entries = {full_max}", 1,
                         max_entries=full_max)]
    return {c.key: c for c in all_}


# --- Prometheus text -----------------------------------------------------------------------------

def scrape(lab: Lab) -> dict[str, float]:
    """fwd's metrics, {'name{labels}': value}, read inside the fw namespace."""
    out = lab.topo.run(lab.topo.fw, ["curl", "-sf", "--max-time", "10",
                                      f"http://127.0.0.1:{METRICS_PORT}/metrics"], check=False)
    if out.returncode:
        raise BenchError(f"scrape failed (curl exit {out.returncode})")
    vals = {}
    for line in out.stdout.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            vals[name] = float(value)
    return vals


def lock_delta(before: dict, after: dict) -> dict[str, dict[str, float]]:
    """Per lock class: acquisitions, contended, wait seconds between two scrapes."""
    out: dict[str, dict[str, float]] = {}
    for name, value in after.items():
        m = re.fullmatch(r'fwd_lock_(acquisitions_total|contended_total|wait_seconds_sum|'
                         r'hold_seconds_total)\{class="([^"]+)"\}', name)
        if m:
            what = m.group(1).split("_")[0]
            out.setdefault(m.group(2), {})[what] = value - before.get(name, 0.0)
    return out


def counter_delta(before: dict, after: dict, name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


# --- traffic -------------------------------------------------------------------------------------

class Traffic:
    """New connections from the client to the server's sink; each send takes fresh tuples."""

    def __init__(self, lab: Lab) -> None:
        self.lab, self.offset = lab, 0
        t = lab.topo
        # The server drops its own RSTs and port unreachables (the latency part's background
        # load has no sink): what newconn sends stays the only traffic (nothing comes back).
        t.run(t.server, ["iptables", "-w", "-A", "OUTPUT", "-p", "tcp", "--tcp-flags",
                         "RST", "RST", "-j", "DROP"])
        t.run(t.server, ["iptables", "-w", "-A", "OUTPUT", "-p", "icmp", "--icmp-type",
                         "port-unreachable", "-j", "DROP"])

    def sink(self, proto: str, count: int | None = None, timeout: float = 60,
             progress: Path | None = None, idle_ms: int = 300):
        argv = [str(nb.TOOLS / "sink"), "--port", str(PORT), "--timeout", str(timeout),
                "--idle-ms", str(idle_ms)]
        argv += ["--tcp"] if proto == "tcp" else []
        argv += ["--count", str(count)] if count else []
        argv += ["--progress", str(progress)] if progress else []
        sink = self.lab.start(self.lab.topo.server, argv)
        if sink.stdout.readline().strip() != "ready":
            raise BenchError(f"sink did not start: {self.lab.finish(sink, 5, 'sink')}")
        return sink

    def send(self, proto: str, count: int, *extra: str, timeout: float = 120) -> dict:
        if self.offset + count > TUPLES:
            self.offset = 0
        argv = [str(nb.TOOLS / "newconn"), "--dst", nb.SERVER4, "--port", str(PORT),
                "--count", str(count), "--src", SRC_BASE, "--srcs", str(SRCS),
                "--offset", str(self.offset), "--duration", str(timeout - 5), *extra]
        argv += ["--tcp"] if proto == "tcp" else []
        self.offset += count
        return json.loads(self.lab.finish(self.lab.start(self.lab.topo.client, argv), timeout,
                                          "newconn"))


def _ksoftirqd() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().startswith("ksoftirqd/"):
                    pids.append(int(entry))
        except (OSError, ValueError):
            pass
    return pids


KSOFTIRQD = _ksoftirqd()


def runtime(pid: int | None, softirqd: bool = True) -> float:
    """CPU seconds used so far by the threads of pid (scheduler runtime, ns precise, with the
    softirq work run in their context), plus, unless softirqd is false, the ksoftirqd threads
    (softirq work the kernel deferred from whoever raised it)."""
    total = 0
    for p in (KSOFTIRQD if softirqd else []) + ([pid] if pid else []):
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e9


@dataclass
class Drain:
    rate: float | None
    cpu: float | None    # CPU seconds per delivered packet (consumer + softirq)
    enqueue: float | None  # CPU seconds per packet of queueing them (sender + softirq)
    sent: int
    delivered: int
    queued: int
    qdrop: int
    udrop: int
    metrics: dict = field(default_factory=dict)  # deltas of fwd's counters over the drain


def drain(lab: Lab, traffic: Traffic, proc, c: Consumer, proto: str, count: int,
          is_fwd: bool) -> Drain:
    qs = range(QUEUE, QUEUE + c.queues)
    count = min(count, c.capacity * 15 // 16 * c.queues)
    before_m = scrape(lab) if is_fwd else {}
    sink = traffic.sink(proto, count=count)
    lab.pause(proc)
    before = lab.queue_stats()
    soft0 = runtime(None)
    sending = traffic.send(proto, count)
    sent = sending["sent"]
    enqueue = (sending["cpu"] + runtime(None) - soft0) / sent if sent else None
    queued = nb.wait_queued(lab, qs)
    cpu0 = runtime(proc.pid)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGCONT)
    got = json.loads(lab.finish(sink, 60, "sink"))
    cpu = runtime(proc.pid) - cpu0
    if got["count"] and got["first"] < t0:
        raise BenchError("packets reached the sink while the consumer was paused")
    qdrop, udrop = nb._drops(before, lab.queue_stats(), c)
    seconds = got["last"] - t0 if got["count"] else 0.0
    after_m = scrape(lab) if is_fwd else {}
    metrics = {}
    if is_fwd:
        metrics["locks"] = lock_delta(before_m, after_m)
        for k in ("fwd_conntrack_new_total", "fwd_conntrack_drop_total",
                  "fwd_conntrack_early_drop_total", "fwd_conntrack_insert_failed_total",
                  "fwd_expect_created_total"):
            metrics[k] = counter_delta(before_m, after_m, k)
        metrics["entries"] = after_m.get("fwd_conntrack_entries", 0.0)
        metrics["verdicts"] = sum(v - before_m.get(k, 0.0) for k, v in after_m.items()
                                  if k.startswith("fwd_verdicts_total"))
    return Drain(got["count"] / seconds if seconds > 0 else None,
                 cpu / got["count"] if got["count"] else None, enqueue, sent, got["count"],
                 queued,
                 qdrop, udrop, metrics)


# --- kernel path ---------------------------------------------------------------------------------

KERNEL_RULES = {
    "k": [["-P", "FORWARD", "DROP"],
          ["-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
          ["-A", "FORWARD", "-s", nb.CLIENT_NET, "-m", "conntrack", "--ctstate", "NEW",
           "-j", "ACCEPT"]],
    "kp": [],
    "k0": [["-t", "raw", "-A", "PREROUTING", "-i", nb.FW_IN_IF, "-j", "DROP"]],
}
KERNEL_LABELS = {"k": "kernel conntrack + stateful policy (no queue)",
                 "kp": "kernel plain forwarding (no rules, no conntrack)",
                 "k0": "sender only (fw drops in raw PREROUTING)"}


def kernel_rules(lab: Lab, key: str | None) -> None:
    t = lab.topo
    for table in ("filter", "raw"):
        t.run(t.fw, ["iptables", "-w", "-t", table, "-F"])
    t.run(t.fw, ["iptables", "-w", "-P", "FORWARD", "ACCEPT"])
    for rule in KERNEL_RULES.get(key, []):
        t.run(t.fw, ["iptables", "-w", *rule])
    t.run(t.fw, ["conntrack", "-F"], check=False)  # no leftovers from an earlier send


@dataclass
class KSend:
    per_packet: float | None   # sender wall seconds per packet
    cpu: float | None          # CPU seconds per packet: the sender's and ksoftirqd's
    sent: int
    delivered: int


def kernel_send(lab: Lab, traffic: Traffic, key: str, proto: str, count: int) -> KSend:
    kernel_rules(lab, key)
    try:
        sink = traffic.sink(proto, count=None if key == "k0" else count, idle_ms=500)
        soft0 = runtime(None)
        sent = traffic.send(proto, count)
        cpu = sent["cpu"] + runtime(None) - soft0
        got = json.loads(lab.finish(sink, 60, "sink")) if key != "k0" else {"count": 0}
        if key == "k0":
            sink.terminate()
            lab.finish(sink, 5, "sink")
    finally:
        kernel_rules(lab, None)
    span = sent["end"] - sent["start"]
    n = sent["sent"]
    return KSend(span / n if n else None, cpu / n if n else None, n, got["count"])


# --- the run -------------------------------------------------------------------------------------

@dataclass
class Results:
    drains: dict = field(default_factory=dict)   # (key, proto) -> [Drain | None]
    kernel: dict = field(default_factory=dict)   # (key, proto) -> [KSend | None]
    notes: list[str] = field(default_factory=list)
    memory: dict = field(default_factory=dict)
    paced: list = field(default_factory=list)
    latency: dict = field(default_factory=dict)


FWD_KEYS = {"d", "e", "e-s1", "e-sip", "full"}


def measure_consumer(lab, traffic, c, protos, args, rep, res) -> None:
    lab.set_rule(c.queues)
    try:
        proc = lab.start_consumer(c)
    except BenchError as err:
        res.notes.append(f"repeat {rep} {c.key}: {err}")
        lab.end_strays()
        return
    try:
        if c.key in FWD_KEYS:
            time.sleep(0.3)  # the exporter thread comes up after the queues are bound
        for proto in protos:
            try:
                m = drain(lab, traffic, proc, c, proto, args.count, c.key in FWD_KEYS)
            except BenchError as err:
                res.notes.append(f"repeat {rep} {c.key} {proto}: {err}")
                lab.end_strays(keep=(proc,))
                m = None
            res.drains.setdefault((c.key, proto), []).append(m)
            if not args.quiet:
                print(f"  repeat {rep} {c.key:5} {proto} " + (
                    f"{m.rate / 1e3:8.1f} kconn/s {(m.cpu or 0) * 1e6:6.2f} us CPU/conn "
                    f"sent {m.sent} delivered {m.delivered} "
                    f"qdrop {m.qdrop} udrop {m.udrop}" if m and m.rate else "failed"),
                    flush=True)
    finally:
        try:
            lab.stop_consumer(proc, c)
        except BenchError as err:
            res.notes.append(f"repeat {rep} {c.key} stop: {err}; stderr: "
                             f"{(lab.scratch / f'consumer-{c.key}.err').read_text()[-1000:]}")
        lab.end_strays()


def measure_kernel(lab, traffic, protos, args, rep, res) -> None:
    for key in ("k", "kp", "k0"):
        for proto in protos:
            try:
                m = kernel_send(lab, traffic, key, proto, args.count)
            except BenchError as err:
                res.notes.append(f"repeat {rep} {key} {proto}: {err}")
                lab.end_strays()
                m = None
            res.kernel.setdefault((key, proto), []).append(m)
            if not args.quiet and m:
                print(f"  repeat {rep} {key:5} {proto} sender {m.per_packet * 1e6:6.2f} us wall "
                      f"{m.cpu * 1e6:6.2f} us CPU per packet, sent {m.sent} delivered "
                      f"{m.delivered}", flush=True)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def measure_paced(lab, traffic, args, res) -> None:
    """fwd d, and fwd with the table-full consumer's max_entries, under paced new connections
    (--paced rates, --paced-seconds each): what it delivers, what the kernel drops at its queue, and fwd's
    CPU per packet when packets arrive spread out."""
    for rate, c in ((r, c) for r in args.paced for c in (
            fwd_consumer("d", "fwd native, 1 queue", 1),
            fwd_consumer("d-b64k", "fwd native, 1 queue, conntrack.buckets = 65536", 1,
                         buckets=65536),
            fwd_consumer("full", "", 1, max_entries=args.full_max))):
        lab.set_rule(1)
        proc = lab.start_consumer(c)
        try:
            n = int(rate * args.paced_seconds)
            sink = traffic.sink("udp", timeout=30, idle_ms=2000)
            before, cpu0 = lab.queue_stats(), runtime(proc.pid, softirqd=False)
            sent = traffic.send("udp", n, "--rate", str(rate), "--batch", "16")
            got = json.loads(lab.finish(sink, 60, "sink"))
            cpu = runtime(proc.pid, softirqd=False) - cpu0
            qdrop, udrop = nb._drops(before, lab.queue_stats(), c)
            res.paced.append({"key": c.key, "rate": rate, "sent": sent["sent"],
                              "seconds": sent["end"] - sent["start"],
                              "delivered": got["count"], "qdrop": qdrop, "udrop": udrop,
                              "fwd_cpu_per_packet": cpu / max(got["count"], 1)})
        finally:
            lab.stop_consumer(proc, c)
            lab.end_strays()


def measure_memory(lab, traffic, args, res) -> None:
    n = args.mem_conns
    c = fwd_consumer("mem", "fwd native, 1 queue, big table", 1,
                     max_entries=max(2 * n, 262144))
    lab.set_rule(1)
    proc = lab.start_consumer(c)
    try:
        time.sleep(0.5)
        before_m, rss0 = scrape(lab), rss_kib(proc.pid)  # ip netns exec execs: fwd's pid
        progress = lab.scratch / "progress"
        sink = traffic.sink("udp", count=n, timeout=600, progress=progress, idle_ms=5000)
        sent = traffic.send("udp", n, "--window", "4096", "--progress", str(progress),
                            timeout=600)
        got = json.loads(lab.finish(sink, 60, "sink"))
        after_m, rss1 = scrape(lab), rss_kib(proc.pid)
    finally:
        lab.stop_consumer(proc, c)
        lab.end_strays()
    entries = after_m.get("fwd_conntrack_entries", 0) - before_m.get("fwd_conntrack_entries", 0)
    res.memory = {"sent": sent["sent"], "delivered": got["count"], "entries": entries,
                  "rss_before_kib": rss0, "rss_after_kib": rss1,
                  "bytes_per_conn": (rss1 - rss0) * 1024 / entries if entries else None,
                  "seconds": sent["end"] - sent["start"]}


# --- latency at a given load ---------------------------------------------------------------------

PINGER = r"""
import json, socket, sys, time
dst, port, n, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rtts, lost = [], 0
s = None
deadline = time.monotonic() + 60
for i in range(n + 20):
    if time.monotonic() > deadline:
        lost += n + 20 - max(i, 20)
        break
    if s is None or mode == "new":
        if s: s.close()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.2)
    t = time.perf_counter_ns()
    s.sendto(b"x" * 8, (dst, port))
    try:
        s.recv(64)
    except socket.timeout:
        lost += i >= 20
        continue
    if i >= 20:
        rtts.append(time.perf_counter_ns() - t)
    time.sleep(0.001)
print(json.dumps({"rtts": rtts, "lost": lost}))
"""
ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(64)
    s.sendto(data, addr)
"""


def latency(lab, traffic, rate: float | None, args, keep=()) -> dict:
    """p50/p99 round trips, established and new, with `rate` new connections/s behind them."""
    echo = lab.start(lab.topo.server, [nb.PY, "-c", ECHO, str(PORT + 1)])
    if echo.stdout.readline().strip() != "ready":
        raise BenchError("echo server did not start")
    out = {}
    try:
        for mode in ("established", "new"):
            bg = None
            if rate:  # background new connections for this mode's pings, ended after them
                seconds = 120  # longer than the pinger may take (it is ended at 120 s)
                bg = lab.start(lab.topo.client, [
                    str(nb.TOOLS / "newconn"), "--dst", nb.SERVER4, "--port", str(PORT),
                    "--count", str(int(rate * seconds)), "--src", SRC_BASE, "--srcs",
                    str(SRCS), "--offset", str(traffic.offset), "--rate", str(rate),
                    "--batch", "16", "--duration", str(seconds)])
                traffic.offset += int(rate * seconds)
                time.sleep(1)
            got = json.loads(lab.finish(lab.start(lab.topo.client, [
                nb.PY, "-c", PINGER, nb.SERVER4, str(PORT + 1), str(args.pings), mode]),
                120, "pinger"))
            if bg and bg.poll() is not None:
                raise BenchError("the background load ended before the pings")
            lab.end_strays(keep=(*keep, echo))
            rtts = sorted(got["rtts"])
            out[mode] = {"n": len(rtts), "lost": got["lost"],
                         "p50_us": rtts[len(rtts) // 2] / 1e3 if rtts else None,
                         "p99_us": rtts[int(len(rtts) * 0.99)] / 1e3 if rtts else None}
    finally:
        lab.end_strays(keep=keep)
    return out


def measure_latency(lab, traffic, args, res, d_rate: float | None) -> None:
    rate = args.load * d_rate if d_rate else None
    c = fwd_consumer("d", "fwd native, 1 queue", 1)
    # Pings to the echo port (new from the client subnet: accepted by both policies).
    kernel_rules(lab, None)
    lab.set_rule(None)
    res.latency["none, idle"] = latency(lab, traffic, None, args)
    kernel_rules(lab, "k")
    res.latency["kernel conntrack, idle"] = latency(lab, traffic, None, args)
    res.latency[f"kernel conntrack, {rate or 0:.0f} new conn/s"] = latency(
        lab, traffic, rate, args)
    kernel_rules(lab, None)
    lab.set_rule(1)
    proc = lab.start_consumer(c)
    try:
        res.latency["fwd d, idle"] = latency(lab, traffic, None, args, keep=(proc,))
        res.latency[f"fwd d, {rate or 0:.0f} new conn/s"] = latency(lab, traffic, rate, args,
                                                                     keep=(proc,))
    finally:
        lab.stop_consumer(proc, c)
        lab.end_strays()


def run(args) -> Results:
    table = consumers(args.full_max)
    chosen = [table[k] for k in args.consumers]
    res = Results()
    lab = Lab("ncb")
    try:
        traffic = Traffic(lab)
        for rep in range(args.repeats):
            shift = rep % len(chosen) if chosen else 0
            for c in chosen[shift:] + chosen[:shift]:
                measure_consumer(lab, traffic, c, args.protos, args, rep, res)
            if args.kernel:
                measure_kernel(lab, traffic, args.protos, args, rep, res)
        try:
            if args.paced:
                measure_paced(lab, traffic, args, res)
            if args.mem_conns:
                measure_memory(lab, traffic, args, res)
            if args.pings:
                d = [m.rate for m in res.drains.get(("d", "udp"), []) if m and m.rate]
                measure_latency(lab, traffic, args, res, statistics.median(d) if d else None)
        except BenchError as err:
            res.notes.append(f"memory/latency: {err}")
            lab.end_strays()
    finally:
        lab.close()
    return res


# --- report --------------------------------------------------------------------------------------

def _med(xs):
    xs = [x for x in xs if x]
    return statistics.median(xs) if xs else None


def _fmt(x, spec=".2f"):
    return format(x, spec) if x is not None else "n/a"


def report(res: Results, args) -> str:
    table = consumers(args.full_max)
    out = []
    reps = args.repeats

    def rates(key, proto):
        return [m.rate if m else None for m in res.drains.get((key, proto), [])]

    def ktime(key, proto, what="cpu"):  # kernel router seconds per new connection, per repeat
        ks = res.kernel.get((key, proto), [])
        k0 = res.kernel.get(("k0", proto), [])
        return [getattr(a, what) - getattr(b, what) if a and b and getattr(a, what)
                and getattr(b, what) and a.delivered >= a.sent * 0.99 else None
                for a, b in zip(ks, k0)]

    def cpus(key, proto):
        return [m.cpu if m else None for m in res.drains.get((key, proto), [])]

    def router(key, proto):  # drain + queueing - the sender's own cost (k0), per repeat
        k0 = res.kernel.get(("k0", proto), [])
        return [m.cpu + m.enqueue - b.cpu if m and b and m.cpu and m.enqueue and b.cpu
                else None for m, b in zip(res.drains.get((key, proto), []), k0)]

    def paired(xs, ys):
        return [x / y for x, y in zip(xs, ys) if x and y]

    def ratio(xs, ys):
        rs = paired(xs, ys)
        return (f"{statistics.median(rs):.2f} (per repeat {min(rs):.2f}..{max(rs):.2f}, "
                f"n={len(rs)})" if rs else "not measured")

    for proto in args.protos:
        out.append(f"== {proto} {'SYN' if proto == 'tcp' else 'datagram'}: every packet a new "
                   f"connection, drain of {args.count} (median of {reps}) ==")
        out.append(f"{'consumer':50} {'kconn/s':>8} {'x(a)':>5} {'CPU us':>7} "
                   f"{'x(a)':>5} {'router us':>9}  sent/delivered/qdrop/udrop")
        for key in args.consumers:
            ms = [m for m in res.drains.get((key, proto), []) if m]
            if not ms:
                continue
            med, cpu = _med(rates(key, proto)), _med(cpus(key, proto))
            rt = _med(router(key, proto))
            ra = paired(rates(key, proto), rates("a", proto))
            ca = paired(cpus("a", proto), cpus(key, proto))
            out.append(f"({key}) {table[key].label}"[:50].ljust(50) +
                       f" {_fmt(med and med / 1e3, '8.1f')} "
                       f"{_fmt(statistics.median(ra) if ra else None, '5.2f')} "
                       f"{_fmt(cpu and cpu * 1e6, '7.2f')} "
                       f"{_fmt(statistics.median(ca) if ca else None, '5.2f')} "
                       f"{_fmt(rt and rt * 1e6, '9.2f')}  "
                       f"{sum(m.sent for m in ms)}/{sum(m.delivered for m in ms)}/"
                       f"{sum(m.qdrop for m in ms)}/{sum(m.udrop for m in ms)}")
        if args.kernel:
            for key in ("k", "kp", "k0"):
                ks = [m for m in res.kernel.get((key, proto), []) if m]
                if not ks:
                    continue
                t, c = _med([m.per_packet for m in ks]), _med([m.cpu for m in ks])
                out.append(f"({key}) {KERNEL_LABELS[key]}"[:50].ljust(50) +
                           f" sender: {_fmt(t and t * 1e6, '.2f')} us wall, "
                           f"{_fmt(c and c * 1e6, '.2f')} us CPU per packet; sent "
                           f"{sum(m.sent for m in ks)} delivered {sum(m.delivered for m in ks)}")
            out.append("    CPU us: the drain (consumer + softirq); router us: the drain + queueing "
                       "the packets - the sender's own cost (k0): from the fw namespace's "
                       "PREROUTING to the sink, as t(k) - t(k0)")
            for key, what in (("k", "kernel conntrack router"), ("kp", "kernel plain forward")):
                c, t = _med(ktime(key, proto)), _med(ktime(key, proto, "per_packet"))
                out.append(f"    {what}: t({key}) - t(k0) = {_fmt(c and c * 1e6, '.2f')} us CPU "
                           f"({_fmt(t and t * 1e6, '.2f')} us wall) per new connection")
        out.append("ratios (median of paired per-repeat ratios; 'CPU': of CPU per connection, "
                   "inverted, i.e. capacity on one CPU):")
        kcap = [1 / t if t else None for t in ktime("k", proto)]
        cap = lambda key: [1 / c if c else None for c in cpus(key, proto)]  # noqa: E731
        rcap = lambda key: [1 / c if c else None for c in router(key, proto)]  # noqa: E731
        lines = [("d/a", "fwd 1q vs C accept-all (target >= 0.8)", rates("d", proto),
                  rates("a", proto)),
                 ("d/a CPU", "the same, CPU per connection", cap("d"), cap("a")),
                 ("e/d", "fwd 2q vs 1q (target >= 1.6)", rates("e", proto), rates("d", proto)),
                 ("a-2q/a", "C 2q vs 1q (the 2-queue ceiling here)", rates("a-2q", proto),
                  rates("a", proto)),
                 ("e/e-s1", "default shards vs shards = 1", rates("e", proto),
                  rates("e-s1", proto)),
                 ("e-sip/e", "SIP helper attached vs none", rates("e-sip", proto),
                  rates("e", proto)),
                 ("d/k CPU", "fwd 1q vs kernel conntrack router (router us)", rcap("d"),
                  kcap),
                 ("a/k CPU", "C accept-all vs kernel router (NFQUEUE's price)", rcap("a"),
                  kcap),
                 ("full/d", "table full vs not (same consumer otherwise)",
                  rates("full", proto), rates("d", proto)),
                 ("d/d-b64k CPU", "buckets = max_entries (default) vs 65536",
                  cap("d"), cap("d-b64k"))]
        for name, what, xs, ys in lines:
            if paired(xs, ys):
                out.append(f"  {name:8} {what:50} {ratio(xs, ys)}")
        out.append("fwd's own counters over each drain (median over repeats):")
        for key in args.consumers:
            ms = [m for m in res.drains.get((key, proto), []) if m and m.metrics]
            if not ms:
                continue
            locks: dict[str, dict[str, list]] = {}
            for m in ms:
                for cls, v in m.metrics["locks"].items():
                    for k2, x in v.items():
                        locks.setdefault(cls, {}).setdefault(k2, []).append(x)
            parts = []
            for cls, v in sorted(locks.items()):
                acq, cont = statistics.median(v["acquisitions"]), statistics.median(
                    v["contended"])
                parts.append(f"{cls}: acq {acq:.0f} contended {cont:.0f} "
                             f"({cont / acq * 100 if acq else 0:.2f} %) wait "
                             f"{statistics.median(v['wait']) * 1e3:.2f} ms")
            mm = lambda k: statistics.median(m.metrics.get(k, 0) for m in ms)  # noqa: E731
            out.append(f"  ({key}) new {mm('fwd_conntrack_new_total'):.0f} drop "
                       f"{mm('fwd_conntrack_drop_total'):.0f} early_drop "
                       f"{mm('fwd_conntrack_early_drop_total'):.0f} insert_failed "
                       f"{mm('fwd_conntrack_insert_failed_total'):.0f} verdicts "
                       f"{mm('verdicts'):.0f} entries after {mm('entries'):.0f}")
            out += [f"      {p}" for p in parts]
        out.append("")
    if res.paced:
        out.append(f"fwd under paced new UDP connections ({args.paced_seconds:g} s each, "
                   f"batches of 16; full: "
                   f"max_entries = {args.full_max}):")
        for p in res.paced:
            out.append(f"  ({p['key']:4}) {p['rate']:6.0f}/s: sent {p['sent']} in {p['seconds']:.1f} s, "
                       f"delivered {p['delivered']}, queue full {p['qdrop']}, socket full "
                       f"{p['udrop']}; fwd {p['fwd_cpu_per_packet'] * 1e6:.2f} us CPU per "
                       f"packet (its threads)")
    if res.memory:
        m = res.memory
        out.append(f"memory: {m['entries']:.0f} connections added ({m['sent']} sent, "
                   f"{m['delivered']} delivered in {m['seconds']:.1f} s): RSS "
                   f"{m['rss_before_kib'] / 1024:.1f} -> {m['rss_after_kib'] / 1024:.1f} MiB, "
                   f"{_fmt(m['bytes_per_conn'], '.0f')} bytes per connection")
    if res.latency:
        out.append(f"latency (UDP ping-pong, request and reply both cross fw; "
                   f"{args.pings} pings each):")
        out.append(f"  {'path, background load':44} {'estab p50':>10} {'p99':>8} "
                   f"{'new p50':>10} {'p99':>8}  (us)")
        for what, v in res.latency.items():
            e, n = v["established"], v["new"]
            out.append(f"  {what:44} {_fmt(e['p50_us'], '10.1f')} {_fmt(e['p99_us'], '8.1f')}"
                       f" {_fmt(n['p50_us'], '10.1f')} {_fmt(n['p99_us'], '8.1f')}"
                       f"  lost {e['lost']}/{n['lost']}")
    if res.notes:
        out.append("notes:")
        out += [f"  {n}" for n in res.notes]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--consumers", default="a,a-2q,d,e,e-s1,e-sip,full")
    parser.add_argument("--protos", default="udp,tcp")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--count", type=int, default=60000, help="new connections per drain")
    parser.add_argument("--no-kernel", dest="kernel", action="store_false",
                        help="skip the kernel reference")
    parser.add_argument("--full-max", type=int, default=16384,
                        help="max_entries of the table-full consumer")
    parser.add_argument("--mem-conns", type=int, default=1_000_000,
                        help="connections for the memory part (0: skip)")
    parser.add_argument("--pings", type=int, default=2000,
                        help="pings per latency measurement, at most 60 s of them; the rest "
                             "count as lost (0: skip latency)")
    parser.add_argument("--load", type=float, default=0.5,
                        help="latency: background new connections as a share of d's rate")
    parser.add_argument("--paced", default="", metavar="RATES",
                        help="fwd d and fwd with a full table under these paced "
                             "new-connection rates")
    parser.add_argument("--paced-seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true",
                        help="1 repeat, 20000 per drain, 100k memory, 300 pings")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.quick:  # smaller sizes, except where given explicitly
        for name, value in (("repeats", 1), ("count", 20000), ("mem_conns", 100_000),
                            ("pings", 300)):
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    args.consumers = [k for k in args.consumers.split(",") if k]
    args.protos = args.protos.split(",")
    args.paced = [float(r) for r in args.paced.split(",") if r]
    table = consumers(args.full_max)
    bad = [k for k in args.consumers if k not in table] + \
          [p for p in args.protos if p not in ("udp", "tcp")]
    if bad:
        parser.error(f"unknown consumer or protocol: {', '.join(bad)}")
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, iptables inside them)")
    subprocess.run(["make", "-s", "-C", str(REPO / "bench")], check=True)
    nb.exit_on_sigterm()
    started, cpu_start = time.monotonic(), nb.cpu_times()
    res = run(args)
    wall = time.monotonic() - started
    res.notes.append(nb.load_note(cpu_start, wall))
    print()
    print(report(res, args))
    print(f"\n{args.repeats} repeats, {wall:.0f} s; command: {' '.join(sys.argv)}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args),
            "drains": {f"{k}/{p}": [vars(m) if m else None for m in v]
                       for (k, p), v in res.drains.items()},
            "kernel": {f"{k}/{p}": [vars(m) if m else None for m in v]
                       for (k, p), v in res.kernel.items()},
            "memory": res.memory, "latency": res.latency, "paced": res.paced,
            "notes": res.notes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
