# SPDX-License-Identifier: GPL-2.0-or-later
"""NFQUEUE throughput benchmark: queue consumers side by side in one run.

    .venv/bin/python bench/nfq_bench.py [--quick] [--repeats N] [--consumers a,b,c,d,e] ...

Builds client -- fw -- server namespaces (fwd.netns), puts `-j NFQUEUE` in the fw namespace's
FORWARD chain (`--queue-num Q`, or `--queue-balance Q:Q+1` for two-queue consumers) and sends
UDP from the client (bench/blast.c) to a sink on the server (bench/sink.c).  A consumer is a
command run inside the fw namespace that binds queue Q (or Q..Q+1); the kernel reports what is
bound, queued and dropped in /proc/net/netfilter/nfnetlink_queue of that namespace.

Consumers:
  a     C accept-all, recvmmsg + one batch verdict per batch (bench/nfq_accept.c): the baseline
  a-pp  the same with one verdict message per packet (what batching verdicts is worth)
  a-2q  the same on two queues, one thread each (the two-queue ceiling on this machine)
  b     python netfilterqueue, accept-only callback (bench/nfq_py_accept.py)
  c     fwd on netfilterqueue: `python -m fwd run`, conntrack + a stateful policy
  d, e  fwd native (queue.io = "native") on 1 and 2 queues, same policy; skipped with a note
        while fwd.config does not know queue.io = "native"
  h-sip, h-h323  fwd native on 1 queue with the SIP (or H.323) helper attached to the blast's
        flows: every packet is also read by the helper (issue 13's helper-attached drain)

Methods:
  drain   SIGSTOP the bound consumer, blast up to --count packets into its queue (what the
          queue holds for that consumer), SIGCONT, time delivery at the sink from the resume to
          the last packet: the consumer's own capacity, no sender competing for the CPUs.
          A consumer whose queue is shorter (fwd on netfilterqueue: 1024 packets) drains in
          rounds of what its queue holds; the rate is packets over the summed drain times.
  steady  closed loop for --seconds: the sender keeps at most --window packets in flight
          (sent, not yet at the sink); delivered packets / (last - first arrival).

Every repeat runs every consumer (the order rotates per repeat); the table shows medians, the
ratios are medians of per-repeat ratios (paired: same repeat, same conditions).  Targets of
issue 3 are checked at the end.  Everything runs inside namespaces created here; they, and every
process started here, are removed at exit, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fwd import assets, config as fwd_config, gateway  # noqa: E402
from fwd.netns import (CLIENT4, CLIENT_IF, FW_IN4, FW_IN_IF, FW_OUT4, FW_OUT_IF,  # noqa: E402
                       SERVER4, SERVER_IF, Topology)

TOOLS = REPO / "build" / "bench"
PY = sys.executable
QUEUE = 100            # first queue number used here
SINK_PORT = 9000
CLIENT_NET = "10.77.1.0/24"  # fwd.netns puts the client (and the extra sources below) here
EXTRA_SRCS = [f"10.77.1.{10 + i}" for i in range(32)]  # candidates for balanced sources
SRCS_PER_QUEUE = 4
FULL_QUEUE = 65536     # the most a queue holds on this kernel, whatever is asked
NFQ_MAX_LEN = fwd_config.NFQ_PY_MAX_LEN  # the most fwd's netfilterqueue backend queues
READY_TIMEOUT = 20.0   # seconds a consumer may take to bind its queue(s)
DRAIN_ROUNDS = 16      # most drain rounds for a consumer whose queue is shorter than --count


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


# --- consumers -----------------------------------------------------------------------------------

@dataclass
class Consumer:
    key: str
    label: str
    queues: int                              # 1: --queue-num Q, 2: --queue-balance Q:Q+1
    capacity: int                            # packets its queue holds (its max length)
    argv: Callable[[int, Path], list[str]]   # (first queue, scratch dir) -> command
    skip: str | None = None                  # why it cannot run here


FWD_POLICY = gateway.policy("stateful", "from-client", client_src=CLIENT_NET)


def fwd_config_text(queue: int, io: str, count: int = 1, listen: str = "",
                    policy: str = FWD_POLICY) -> str:
    """fwd's config for a benchmark: the queue(s), conntrack at its defaults, a stateful policy
    (replies and related pass, new connections only from the client subnet, the rest is
    dropped).  The rules are installed by the benchmark, not by fwd.  Native queues are as long
    as the kernel allows (netfilterqueue's stay at its limit); fail-open is off, so no packet
    passes without a verdict while the consumer is paused.  `listen`: the exporter's address
    (inside the fw namespace), off by default; `policy`: another [policy] section."""
    lines = ["[queue]", f"num = {queue}", f"count = {count}", f'io = "{io}"',
             "install_rules = false"]
    if io == "native":
        lines += [f"max_len = {FULL_QUEUE}", "fail_open = false"]
    # No control socket, no exporter unless asked: a benchmark fwd must not take a real fwd's.
    return "\n".join([*lines, "", "[log]", 'level = "warning"', "", "[metrics]",
                      f'listen = "{listen}"',
                      "", "[control]", 'socket = ""', policy])


def helper_file(name: str) -> str:
    """The shipped helper file of `name`, attached instead to the benchmark's UDP flows (every
    packet is read by the helper) and passing what it cannot parse (the drain counts verdicts,
    and the blast payload is no protocol message)."""
    text = assets.shipped()[f"helpers.d/{name}.toml"].read_text()
    text = re.sub(r"(?m)^ports = .*$", f"ports = [{SINK_PORT}]", text)
    text = re.sub(r"(?m)^transports = .*$", 'transports = ["udp"]', text)
    return re.sub(r"(?m)^on_error = .*$", 'on_error = "accept"', text)


def _fwd_consumer(key: str, label: str, io: str, queues: int, helper: str = "") -> Consumer:
    def argv(queue: int, scratch: Path) -> list[str]:
        folder = scratch / f"fwd-{key}"
        (folder / "helpers.d").mkdir(parents=True, exist_ok=True)
        if helper:
            (folder / "helpers.d" / f"{helper}.toml").write_text(helper_file(helper))
        path = folder / "fwd.toml"
        path.write_text(fwd_config_text(queue, io, queues))
        return [PY, "-m", "fwd", "run", "--config", str(path)]

    fwd_config.parse(tomllib.loads(fwd_config_text(QUEUE, io, queues)))  # fails loudly if stale
    return Consumer(key, label, queues, FULL_QUEUE if io == "native" else NFQ_MAX_LEN, argv)


def consumers() -> dict[str, Consumer]:
    accept = str(TOOLS / "nfq_accept")
    # (b) binds the way fwd's netfilterqueue backend does (queue length, copy range), so that
    # (c) / (b) is fwd's own cost; its socket buffer holds the whole queue of small packets.
    py_len = NFQ_MAX_LEN
    py_sock = max(py_len * 2048, 1024 * 4716 // 2)  # netfilterqueue's default at least
    all_ = [
        Consumer("a", "C accept-all, batch verdicts", 1, FULL_QUEUE,
                 lambda q, _: [accept, str(q)]),
        Consumer("a-pp", "C accept-all, verdict per packet", 1, FULL_QUEUE,
                 lambda q, _: [accept, "--per-packet", str(q)]),
        Consumer("a-2q", "C accept-all, batch verdicts, 2 queues", 2, FULL_QUEUE,
                 lambda q, _: [accept, str(q), str(q + 1)]),
        Consumer("b", "python netfilterqueue accept-only", 1, py_len,
                 lambda q, _: [PY, str(REPO / "bench" / "nfq_py_accept.py"), str(q),
                               "--max-len", str(py_len), "--sock-len", str(py_sock)]),
        _fwd_consumer("c", "fwd on netfilterqueue", "netfilterqueue", 1),
        _fwd_consumer("d", "fwd native, 1 queue", "native", 1),
        _fwd_consumer("e", "fwd native, 2 queues", "native", 2),
        _fwd_consumer("h-sip", "fwd native, 1 queue, SIP helper on every packet", "native", 1,
                      "sip"),
        _fwd_consumer("h-h323", "fwd native, 1 queue, H.323 (RAS) helper on every packet",
                      "native", 1, "h323"),
    ]
    return {c.key: c for c in all_}


# --- the lab: namespaces, rules, processes -------------------------------------------------------

def _mac(topo: Topology, ns: str, dev: str) -> str:
    out = topo.run(ns, ["ip", "-j", "link", "show", "dev", dev]).stdout
    return json.loads(out)[0]["address"]


def _stopped(pid: int) -> bool:
    """Whether every thread of the process is in group stop (state T)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] != "T":
                return False
    return True


@dataclass
class QueueStat:
    portid: int
    total: int         # packets waiting for a verdict
    dropped: int       # queue full
    user_dropped: int  # netlink socket full
    id_sequence: int   # packets ever queued (last id)


class Lab:
    """The topology with static neighbours, extra client source addresses, a scratch dir, and
    every process started for the benchmark (ended by PID in close())."""

    def __init__(self, prefix: str = "nfqb") -> None:
        self.procs: list[subprocess.Popen] = []
        self.scratch = Path(tempfile.mkdtemp(prefix="nfq_bench."))
        self.topo = Topology.create(prefix)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        t = self.topo
        for addr in EXTRA_SRCS:
            t.ip(t.client, "addr", "add", f"{addr}/24", "dev", CLIENT_IF)
        # Permanent neighbours: no ARP resolution inside a measurement.
        client_mac, server_mac = _mac(t, t.client, CLIENT_IF), _mac(t, t.server, SERVER_IF)
        fw_in_mac, fw_out_mac = _mac(t, t.fw, FW_IN_IF), _mac(t, t.fw, FW_OUT_IF)
        neigh = ("neigh", "replace")
        t.ip(t.client, *neigh, FW_IN4, "lladdr", fw_in_mac, "dev", CLIENT_IF, "nud", "permanent")
        t.ip(t.server, *neigh, FW_OUT4, "lladdr", fw_out_mac, "dev", SERVER_IF, "nud",
             "permanent")
        t.ip(t.fw, *neigh, SERVER4, "lladdr", server_mac, "dev", FW_OUT_IF, "nud", "permanent")
        for addr in [CLIENT4, *EXTRA_SRCS]:
            t.ip(t.fw, *neigh, addr, "lladdr", client_mac, "dev", FW_IN_IF, "nud", "permanent")
        # A process that stays in the fw namespace: /proc/PID/net of it is the fw namespace's.
        self.anchor = self.start(t.fw, ["sleep", "3600"], stdout=subprocess.DEVNULL)
        want = os.stat(f"/run/netns/{t.fw}").st_ino
        deadline = time.monotonic() + 5
        while os.stat(f"/proc/{self.anchor.pid}/ns/net").st_ino != want:
            if time.monotonic() > deadline:
                raise BenchError("the anchor process did not enter the fw namespace")
            time.sleep(0.01)

    # processes
    def start(self, ns: str, argv: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        proc = self.topo.popen(ns, argv, text=True, cwd=REPO, **kw)
        self.procs = [p for p in self.procs if p.returncode is None] + [proc]
        return proc

    def finish(self, proc: subprocess.Popen, timeout: float, what: str) -> str:
        """Wait for a process to end by itself; its stdout.  Killed (and an error) if late."""
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise BenchError(f"{what} still running after {timeout} s; stderr: "
                             f"{(err or '').strip()}")
        if proc.returncode != 0:
            raise BenchError(f"{what} exited {proc.returncode}: {(err or '').strip()}")
        return out

    def end_strays(self, keep: tuple[subprocess.Popen, ...] = ()) -> None:
        """Kill every process started here that still runs, except the anchor and `keep`: what a
        failed measurement left behind (a sink still bound to its port, a sender) must not make
        the next one fail."""
        for proc in self.procs:
            if proc not in keep and proc is not self.anchor and proc.poll() is None:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.topo.close()
        shutil.rmtree(self.scratch)

    # the queue rule and the kernel's view of the queues
    def set_rule(self, queues: int | None) -> None:
        """FORWARD -> NFQUEUE to QUEUE (or QUEUE..QUEUE+queues-1), or no rule (None).  No
        --queue-bypass: nothing passes unless a consumer accepts it."""
        target = (["--queue-num", str(QUEUE)] if queues == 1 else
                  ["--queue-balance", f"{QUEUE}:{QUEUE + queues - 1}"] if queues else None)
        self.topo.run(self.topo.fw, ["iptables", "-w", "-F", "FORWARD"])
        if target:
            self.topo.run(self.topo.fw, ["iptables", "-w", "-A", "FORWARD", "-j", "NFQUEUE",
                                         *target])

    def queue_stats(self) -> dict[int, QueueStat]:
        with open(f"/proc/{self.anchor.pid}/net/netfilter/nfnetlink_queue") as f:
            rows = [list(map(int, line.split())) for line in f if line.strip()]
        return {r[0]: QueueStat(r[1], r[2], r[5], r[6], r[7]) for r in rows}

    def start_consumer(self, c: Consumer) -> subprocess.Popen:
        errpath = self.scratch / f"consumer-{c.key}.err"
        with open(errpath, "w") as err:
            proc = self.start(self.topo.fw, c.argv(QUEUE, self.scratch), stderr=err)
        want = set(range(QUEUE, QUEUE + c.queues))
        deadline = time.monotonic() + READY_TIMEOUT
        while not want <= {q for q, s in self.queue_stats().items() if s.portid}:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise BenchError(f"consumer {c.key} did not bind queues {sorted(want)} "
                                 f"(exit {proc.returncode}): {errpath.read_text()[-2000:]}")
            time.sleep(0.02)
        return proc

    def stop_consumer(self, proc: subprocess.Popen, c: Consumer) -> dict:
        """SIGTERM, wait; the consumer's last JSON line on stdout (if it prints one)."""
        proc.send_signal(signal.SIGCONT)  # in case a measurement left it stopped
        proc.terminate()
        try:
            out = self.finish(proc, 15, f"consumer {c.key}")
        except BenchError as err:
            errpath = self.scratch / f"consumer-{c.key}.err"
            raise BenchError(f"{err}; stderr: {errpath.read_text()[-2000:]}") from None
        lines = [line for line in out.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}

    def pause(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while not _stopped(proc.pid):
            if time.monotonic() > deadline:
                raise BenchError(f"pid {proc.pid} did not stop")
            time.sleep(0.001)

    # traffic
    def start_sink(self, count: int | None = None, timeout: float = 30, idle_ms: int = 300,
                   progress: Path | None = None) -> subprocess.Popen:
        argv = [str(TOOLS / "sink"), "--port", str(SINK_PORT), "--timeout", str(timeout),
                "--idle-ms", str(idle_ms)]
        if count:
            argv += ["--count", str(count)]
        if progress:
            argv += ["--progress", str(progress)]
        sink = self.start(self.topo.server, argv)
        if sink.stdout.readline().strip() != "ready":
            raise BenchError(f"sink did not start: {self.finish(sink, 5, 'sink')}")
        return sink

    def blast(self, srcs: list[str], count: int, flows: int, size: int,
              extra: tuple[str, ...] = (), timeout: float = 60) -> dict:
        argv = [str(TOOLS / "blast"), "--dst", SERVER4, "--port", str(SINK_PORT),
                "--count", str(count), "--flows", str(flows), "--size", str(size),
                "--src", ",".join(srcs), *extra]
        return json.loads(self.finish(self.start(self.topo.client, argv), timeout, "blast"))


# --- balanced sources for --queue-balance --------------------------------------------------------

def balanced_sources(lab: Lab) -> list[str]:
    """Source addresses that --queue-balance Q:Q+1 spreads evenly: it hashes addresses and
    protocol only, with a seed chosen at boot, so find out where each candidate lands (one
    packet each, counted per queue in /proc) and take SRCS_PER_QUEUE of each queue, alternating."""
    c = consumers()["a-2q"]
    lab.set_rule(2)
    proc = lab.start_consumer(c)
    # A listening sink: no ICMP port unreachable comes back through the queues.
    sink = lab.start_sink(timeout=60, idle_ms=60000)
    per_queue: dict[int, list[str]] = {QUEUE: [], QUEUE + 1: []}
    try:
        for addr in EXTRA_SRCS:
            if all(len(v) >= SRCS_PER_QUEUE for v in per_queue.values()):
                break
            before = lab.queue_stats()
            lab.blast([addr], 1, 1, 16)
            deadline = time.monotonic() + 2
            while True:
                after = lab.queue_stats()
                moved = [q for q in per_queue if after[q].id_sequence != before[q].id_sequence]
                if moved or time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            if len(moved) != 1:
                raise BenchError(f"calibration: a packet from {addr} reached queues {moved}")
            per_queue[moved[0]].append(addr)
    finally:
        sink.terminate()
        lab.finish(sink, 5, "sink")
        lab.stop_consumer(proc, c)
    n = min(SRCS_PER_QUEUE, *(len(v) for v in per_queue.values()))
    if n == 0:
        raise BenchError(f"calibration: no source lands on one of the queues: {per_queue}")
    return [a for pair in zip(per_queue[QUEUE][:n], per_queue[QUEUE + 1][:n]) for a in pair]


# --- measurements --------------------------------------------------------------------------------

@dataclass
class Measure:
    rate: float | None     # packets/s (None: nothing arrived)
    sent: int
    delivered: int
    queued: int            # drain: packets in the queue at the resume
    qdrop: int             # queue full (kernel)
    udrop: int             # netlink socket full (kernel)


def _drops(before: dict[int, QueueStat], after: dict[int, QueueStat], c: Consumer) -> tuple:
    qs = range(QUEUE, QUEUE + c.queues)
    return (sum(after[q].dropped - before[q].dropped for q in qs),
            sum(after[q].user_dropped - before[q].user_dropped for q in qs))


def wait_queued(lab: Lab, qs: range) -> int:
    """Packets waiting in queues qs once their length stops changing: everything sent is then
    queued (or dropped)."""
    last, stable = -1, 0
    while stable < 3:
        time.sleep(0.01)
        stats = lab.queue_stats()
        queued = sum(stats[q].total for q in qs)
        stable = stable + 1 if queued == last else 0
        last = queued
    return last


def _drain_round(lab: Lab, proc: subprocess.Popen, c: Consumer, args, srcs: list[str],
                 count: int) -> tuple[Measure, float]:
    """Pause, queue `count` packets, resume; the measure and the seconds from the resume to the
    last packet at the sink."""
    qs = range(QUEUE, QUEUE + c.queues)
    sink = lab.start_sink(count=count)
    lab.pause(proc)
    before = lab.queue_stats()
    sent = lab.blast(srcs, count, args.flows, args.size)["sent"]
    queued = wait_queued(lab, qs)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGCONT)
    got = json.loads(lab.finish(sink, 60, "sink"))
    if got["count"] and got["first"] < t0:
        raise BenchError("packets reached the sink while the consumer was paused "
                         "(fail-open or bypass?): not a drain")
    qdrop, udrop = _drops(before, lab.queue_stats(), c)
    seconds = got["last"] - t0 if got["count"] else 0.0
    return Measure(None, sent, got["count"], queued, qdrop, udrop), seconds


def drain(lab: Lab, proc: subprocess.Popen, c: Consumer, args, srcs: list[str]) -> Measure:
    """--count packets through the paused-then-resumed consumer; a consumer whose queue holds
    fewer drains in rounds of a little less than its queue length (at most DRAIN_ROUNDS)."""
    per_round = min(args.count, c.capacity * 15 // 16)
    rounds = min(DRAIN_ROUNDS, -(-args.count // per_round))
    total, seconds = Measure(None, 0, 0, 0, 0, 0), 0.0
    for _ in range(rounds):
        m, s = _drain_round(lab, proc, c, args, srcs, per_round)
        total = Measure(None, *(getattr(total, f) + getattr(m, f)
                                for f in ("sent", "delivered", "queued", "qdrop", "udrop")))
        seconds += s
    total.rate = total.delivered / seconds if seconds > 0 else None
    return total


def steady(lab: Lab, proc: subprocess.Popen, c: Consumer, args, srcs: list[str]) -> Measure:
    progress = lab.scratch / "progress"
    sink = lab.start_sink(timeout=args.seconds + 30, progress=progress)
    before = lab.queue_stats()
    sent = lab.blast(srcs, 1 << 40, args.flows, args.size,
                     ("--duration", str(args.seconds), "--window", str(args.window),
                      "--progress", str(progress)))["sent"]
    got = json.loads(lab.finish(sink, 30, "sink"))
    qdrop, udrop = _drops(before, lab.queue_stats(), c)
    span = got["last"] - got["first"]
    rate = got["count"] / span if got["count"] and span > 0 else None
    return Measure(rate, sent, got["count"], 0, qdrop, udrop)


METHODS = {"drain": drain, "steady": steady}


def profile(lab: Lab, c: Consumer, args, srcs: list[str], out: Path) -> None:
    """One extra drain of consumer c (not counted in the results) under `perf record` with the
    cpu-clock software event (this VM has no hardware counters), user and kernel call chains of
    the consumer's threads; the flat profile goes to `out`."""
    data = lab.scratch / "perf.data"
    lab.set_rule(c.queues)
    proc = lab.start_consumer(c)
    try:
        perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-g",
                                 "-p", str(proc.pid), "-o", str(data)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lab.procs.append(perf)
        time.sleep(0.5)  # perf attaches to every thread
        m = drain(lab, proc, c, args, srcs)
        perf.send_signal(signal.SIGINT)
        _, err = perf.communicate(timeout=60)
        if perf.returncode not in (0, -signal.SIGINT):  # perf re-raises the SIGINT it got
            raise BenchError(f"perf record exited {perf.returncode}: {err.strip()}")
    finally:
        lab.stop_consumer(proc, c)
    def flat(sort: str) -> str:
        return subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                               "--sort", sort, "-g", "none", "--percent-limit", "0.5"],
                              capture_output=True, text=True, timeout=300, check=True).stdout

    out.write_text(f"# perf profile of consumer ({c.key}) {c.label}: one drain of "
                   f"{m.delivered} packets at {(m.rate or 0) / 1e3:.1f} kpps (under perf)\n"
                   f"# command: {' '.join(sys.argv)}\n{flat('dso')}\n{flat('dso,symbol')}")


@dataclass
class Results:
    runs: dict[tuple[str, str], list[Measure | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def rates(self, key: str, method: str) -> list[float | None]:
        return [m.rate if m else None for m in self.runs.get((key, method), [])]


def measure(lab: Lab, c: Consumer, args, srcs: list[str], rep: int,
            notes: list[str]) -> list[tuple[str, Measure | None]]:
    """Start consumer c, run every method on it, stop it; a failure becomes a note."""
    lab.set_rule(c.queues)
    try:
        proc = lab.start_consumer(c)
    except BenchError as err:
        notes.append(f"repeat {rep} {c.key}: {err}")
        return [(method, None) for method in args.methods]
    out = []
    try:
        for method in args.methods:
            try:
                m = METHODS[method](lab, proc, c, args, srcs)
                out.append((method, m))
                if m.qdrop or m.udrop:
                    notes.append(f"repeat {rep} {c.key} {method}: the kernel dropped "
                                 f"{m.qdrop} packets (queue full) and {m.udrop} (socket full)")
            except BenchError as err:
                notes.append(f"repeat {rep} {c.key} {method}: {err}")
                out.append((method, None))
                lab.end_strays(keep=(proc,))
    finally:
        try:
            seen = lab.stop_consumer(proc, c)
        except BenchError as err:
            notes.append(f"repeat {rep} {c.key} stop: {err}")
            seen = {}
        lab.end_strays()
    if seen.get("enobufs"):
        notes.append(f"repeat {rep} {c.key}: {seen['enobufs']} ENOBUFS")
    return out


def run_bench(args) -> Results:
    table = consumers()
    res = Results()
    chosen = []
    for key in args.consumers:
        c = table[key]
        if c.skip:
            res.notes.append(f"skipped ({key}) {c.label}: {c.skip}")
        else:
            chosen.append(c)
    lab = Lab()
    try:
        srcs = balanced_sources(lab)
        res.notes.append(f"sources (balanced over 2 queues): {', '.join(srcs)}")
        for rep in range(args.repeats):
            shift = rep % len(chosen)
            for c in chosen[shift:] + chosen[:shift]:
                # A failing consumer is noted (its measurements count as missing), the run
                # goes on with the others.
                for method, m in measure(lab, c, args, srcs, rep, res.notes):
                    res.runs.setdefault((c.key, method), []).append(m)
                    if not args.quiet:
                        print(f"  repeat {rep} {c.key:5} {method:6} " + (
                            f"{m.rate / 1e3:8.1f} kpps  sent {m.sent} delivered "
                            f"{m.delivered} queued {m.queued} qdrop {m.qdrop} "
                            f"udrop {m.udrop}" if m and m.rate else "failed"), flush=True)
        for key in args.perf:
            out = TOOLS / f"perf-{key}.txt"
            profile(lab, table[key], args, srcs, out)
            res.notes.append(f"perf profile of ({key}) drain: {out.relative_to(REPO)}")
    finally:
        lab.close()
    return res


# --- machine load --------------------------------------------------------------------------------

def cpu_times() -> tuple[float, float, float]:
    """(busy, steal, ours) CPU seconds so far: all CPUs from /proc/stat (steal: taken by the
    hypervisor), and this process with its waited-for children."""
    with open("/proc/stat") as f:
        fields = list(map(int, f.readline().split()[1:9]))
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    hz = os.sysconf("SC_CLK_TCK")
    ours = sum(getattr(resource.getrusage(who), f) for who in
               (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime"))
    return (user + nice + system + irq + softirq) / hz, steal / hz, ours


def load_note(start: tuple[float, float, float], wall: float) -> str:
    """How busy the machine was with other work during the run (the benchmark shares it)."""
    busy, steal, ours = (b - a for a, b in zip(start, cpu_times()))
    cpus = os.cpu_count() or 1
    return (f"machine load during the run ({cpus} CPUs, {wall:.0f} s): busy {busy / wall:.2f} "
            f"CPUs, of which this benchmark's processes {ours / wall:.2f} (softirq work is "
            f"not always charged to them), other {max(busy - ours, 0) / wall:.2f}; "
            f"hypervisor steal {steal / wall:.2f} CPUs")


# --- report --------------------------------------------------------------------------------------

def _median(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x]
    return statistics.median(xs) if xs else None


def paired_ratios(res: Results, num: str, den: str, method: str) -> list[float]:
    """rate(num) / rate(den) per repeat where both were measured."""
    pairs = zip(res.rates(num, method), res.rates(den, method))
    return [a / b for a, b in pairs if a and b]


def paired_ratio(res: Results, num: str, den: str, method: str) -> float | None:
    """Median over repeats of rate(num) / rate(den) in the same repeat."""
    return _median(paired_ratios(res, num, den, method))


def _spread(res: Results, num: str, den: str, method: str) -> str:
    rs = paired_ratios(res, num, den, method)
    return f"(per repeat {min(rs):.2f}..{max(rs):.2f}, n={len(rs)})"


TARGETS = [  # (numerator, denominator, method, at least, what)
    ("d", "a", "drain", 0.9, "fwd native 1q vs C batch accept-all"),
    ("e", "d", "drain", 1.6, "fwd native 2q vs fwd native 1q"),
    ("c", "b", "drain", 0.8, "fwd on netfilterqueue vs python accept-only"),
    ("h-sip", "a", "drain", 0.9, "fwd native 1q, SIP helper attached, vs C accept-all"),
    ("h-h323", "a", "drain", 0.9, "fwd native 1q, H.323 helper attached, vs C accept-all"),
]
CONTEXT = [  # ratios worth seeing next to the targets (DESIGN §6 facts and ceilings)
    ("a", "a-pp", "batch vs per-packet verdicts (DESIGN: ~2x)"),
    ("a", "b", "C batch vs python accept-only (DESIGN: ~2.1x)"),
    ("a-2q", "a", "C 2 queues vs 1 queue (the 2-queue ceiling here)"),
]


def report(res: Results, args, keys: list[str]) -> str:
    table = consumers()
    out = []
    ran = [k for k in keys if any(res.rates(k, m) for m in args.methods)]
    head = f"{'consumer':48}"
    for method in args.methods:
        head += f" {method + ' kpps':>12} {'x(a)':>6} {'x(b)':>6}"
    out += [head, "-" * len(head)]
    for k in ran:
        line = f"({k}) {table[k].label}"[:48].ljust(48)
        for method in args.methods:
            med = _median(res.rates(k, method))
            ra, rb = paired_ratio(res, k, "a", method), paired_ratio(res, k, "b", method)
            line += (f" {med / 1e3 if med else float('nan'):12.1f}"
                     f" {ra if ra else float('nan'):6.2f} {rb if rb else float('nan'):6.2f}")
        out.append(line)
    out.append("")
    out.append("drops and losses, summed over repeats (sent / delivered / kernel queue-full / "
               "socket-full):")
    for k in ran:
        for method in args.methods:
            ms = [m for m in res.runs.get((k, method), []) if m]
            if ms:
                drained = statistics.median(m.queued for m in ms)
                out.append(f"  ({k}) {method:6} sent {sum(m.sent for m in ms)} delivered "
                           f"{sum(m.delivered for m in ms)} qdrop {sum(m.qdrop for m in ms)} "
                           f"udrop {sum(m.udrop for m in ms)}"
                           + (f"  (median queued {drained:.0f})"
                              if method == "drain" else ""))
    out.append("")
    out.append("targets (issue 3), median of paired per-repeat ratios:")
    for num, den, method, at_least, what in TARGETS:
        if method not in args.methods:
            continue
        r = paired_ratio(res, num, den, method)
        if r is None:
            verdict = f"not measured ({num} or {den} did not run)"
        elif r >= at_least:
            verdict = f"{r:.2f} MET (>= {at_least}) {_spread(res, num, den, method)}"
        else:
            verdict = (f"{r:.2f} MISSED by {(1 - r / at_least) * 100:.0f}% (>= {at_least}) "
                       f"{_spread(res, num, den, method)}")
        out.append(f"  {num + '/' + den:9} {method:6} {what:44} {verdict}")
    out.append("context:")
    for method in args.methods:
        for num, den, what in CONTEXT:
            r = paired_ratio(res, num, den, method)
            if r is not None:
                out.append(f"  {num + '/' + den:9} {method:6} {what:48} {r:.2f} "
                           f"{_spread(res, num, den, method)}")
    if res.notes:
        out.append("notes:")
        out += [f"  {n}" for n in res.notes]
    return "\n".join(out)


def exit_on_sigterm() -> None:
    """SIGTERM ends the run like Ctrl-C does: through the cleanup (namespaces, processes)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--consumers", default="a,a-pp,a-2q,b,c,d,e",
                        help="comma-separated consumer keys (default: all)")
    parser.add_argument("--methods", default="drain,steady", help="drain,steady")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--count", type=int, default=60000,
                        help="drain: packets to queue (capped below the consumer's queue length)")
    parser.add_argument("--seconds", type=float, default=1.0, help="steady: seconds per run")
    parser.add_argument("--window", type=int, default=512,
                        help="steady: packets in flight (below every consumer's queue length)")
    parser.add_argument("--flows", type=int, default=64, help="UDP flows (source ports)")
    parser.add_argument("--size", type=int, default=64, help="UDP payload bytes")
    parser.add_argument("--quick", action="store_true",
                        help="one repeat, 20000 packets, 0.5 s steady: a smoke run")
    parser.add_argument("--json", metavar="PATH", help="write every measurement as JSON")
    parser.add_argument("--quiet", action="store_true", help="no per-measurement lines")
    parser.add_argument("--perf", default="", metavar="KEYS",
                        help="after the repeats, profile one drain of each of these consumers "
                             "with perf (flat profile in build/bench/perf-KEY.txt)")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.count, args.seconds = 1, 20000, 0.5
    args.consumers = args.consumers.split(",")
    args.methods = args.methods.split(",")
    args.perf = [k for k in args.perf.split(",") if k]
    table = consumers()
    bad = [k for k in args.consumers + args.perf if k not in table] + \
          [m for m in args.methods if m not in METHODS]
    if bad:
        parser.error(f"unknown consumer or method: {', '.join(bad)}")
    skipped = [k for k in args.perf if table[k].skip]
    if skipped:
        parser.error(f"cannot profile {', '.join(skipped)}: {table[skipped[0]].skip}")
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, iptables inside them)")
    subprocess.run(["make", "-s", "-C", str(REPO / "bench")], check=True)
    exit_on_sigterm()
    started, cpu_start = time.monotonic(), cpu_times()
    res = run_bench(args)
    wall = time.monotonic() - started
    res.notes.append(load_note(cpu_start, wall))
    print()
    print(report(res, args, args.consumers))
    print(f"\n{args.repeats} repeats, {wall:.0f} s; command: {' '.join(sys.argv)}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args),
            "runs": {f"{k}/{m}": [dataclasses.asdict(x) if x else None for x in v]
                     for (k, m), v in res.runs.items()},
            "notes": res.notes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
