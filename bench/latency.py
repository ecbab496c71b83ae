# SPDX-License-Identifier: GPL-2.0-or-later
"""Latency a queue consumer adds: UDP ping-pong through the fw namespace, with and without it.

    .venv/bin/python bench/latency.py [--pings 2000] [--rounds 10] [--consumers none,a,b,c,d]

Same namespaces and consumers as bench/nfq_bench.py.  A client in the client namespace sends one
UDP datagram at a time to an echo server in the server namespace and waits for the echo; every
round trip crosses the fw namespace's FORWARD chain twice (request and reply), so with a queue
rule both pass through the consumer.  "none" is the same path without the queue rule.  The
pings of each consumer are split into --rounds rounds, interleaved with the other consumers';
the first WARMUP pings of each round are not counted.  Prints p50/p99 round-trip times and what
each consumer adds to them compared with "none".
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nfq_bench as nb  # noqa: E402
from fwd.netns import CLIENT4, SERVER4  # noqa: E402

ECHO_PORT = 9100
CLIENT_PORT = 9101
WARMUP = 20            # pings per round not counted (first packets, conntrack entry creation)
PING_TIMEOUT = 0.5     # seconds a ping waits for its echo before it counts as lost
ECHO_LIFETIME = 600.0  # the echo server ends by itself after this, should nobody stop it


def echo(port: int) -> int:
    """Echo server (run in the server namespace): send every datagram back, until SIGTERM or
    ECHO_LIFETIME."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    print("ready", flush=True)
    deadline = time.monotonic() + ECHO_LIFETIME
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            data, peer = s.recvfrom(2048)
        except TimeoutError:
            break
        s.sendto(data, peer)
    return 0


def ping(count: int) -> int:
    """Pinger (run in the client namespace): `count` sequential pings; prints
    {"rtt_us": [...], "lost": n} for the pings after the first WARMUP."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((CLIENT4, CLIENT_PORT))
    s.connect((SERVER4, ECHO_PORT))
    s.settimeout(PING_TIMEOUT)
    rtts, lost = [], 0
    for seq in range(count + WARMUP):
        msg = seq.to_bytes(8, "big")
        t0 = time.perf_counter_ns()
        s.send(msg)
        try:
            while s.recv(64) != msg:  # a late echo of an earlier, lost ping
                pass
        except TimeoutError:
            lost += seq >= WARMUP
            continue
        if seq >= WARMUP:
            rtts.append((time.perf_counter_ns() - t0) / 1e3)
    print(json.dumps({"rtt_us": rtts, "lost": lost}))
    return 0


def pct(xs: list[float], p: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[p - 1] if len(xs) > 1 else xs[0]


def run(args) -> int:
    table = nb.consumers()
    chosen, notes = [], []
    for key in args.consumers:
        if key != "none" and table[key].skip:
            notes.append(f"skipped ({key}) {table[key].label}: {table[key].skip}")
        else:
            chosen.append(key)
    samples: dict[str, list[float]] = {k: [] for k in chosen}
    lost = dict.fromkeys(chosen, 0)
    per_round = -(-args.pings // args.rounds)
    me = [nb.PY, str(Path(__file__).resolve())]
    lab = nb.Lab("nfql")
    try:
        server = lab.start(lab.topo.server, [*me, "--echo"])
        if server.stdout.readline().strip() != "ready":
            raise nb.BenchError("echo server did not start")
        for rnd in range(args.rounds):
            shift = rnd % len(chosen)
            for key in chosen[shift:] + chosen[:shift]:
                c = table.get(key)
                lab.set_rule(c.queues if c else None)
                proc = lab.start_consumer(c) if c else None
                try:
                    got = json.loads(lab.finish(
                        lab.start(lab.topo.client, [*me, "--ping", str(per_round)]),
                        per_round * PING_TIMEOUT + 30, "pinger"))
                finally:
                    if proc:
                        lab.stop_consumer(proc, c)
                samples[key] += got["rtt_us"]
                lost[key] += got["lost"]
        server.terminate()
    finally:
        lab.close()

    label = {"none": "no queue rule", **{k: c.label for k, c in table.items()}}
    base = samples.get("none")
    head = (f"{'path':44} {'pings':>6} {'lost':>5} {'p50 us':>8} {'p99 us':>8}"
            f" {'+p50 us':>8} {'+p99 us':>8}")
    print(head)
    print("-" * len(head))
    for key in chosen:
        xs = samples[key]
        if not xs:
            print(f"({key}) {label[key]:39} {0:6} {lost[key]:5}  no echo came back")
            continue
        p50, p99 = pct(xs, 50), pct(xs, 99)
        added = (f" {p50 - pct(base, 50):8.1f} {p99 - pct(base, 99):8.1f}" if base else "")
        print(f"{f'({key}) {label[key]}':44} {len(xs):6} {lost[key]:5} {p50:8.1f} {p99:8.1f}"
              + added)
    print("\n+p50/+p99: added to the round trip (request and reply both pass the consumer)"
          " compared with the same path without the queue rule.")
    for n in notes:
        print(f"note: {n}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--consumers", default="none,a,b,c,d",
                        help="comma-separated: none and consumer keys of nfq_bench.py")
    parser.add_argument("--pings", type=int, default=2000, help="counted pings per consumer")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ping", type=int, metavar="COUNT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo:
        return echo(ECHO_PORT)
    if args.ping:
        return ping(args.ping)
    args.consumers = args.consumers.split(",")
    bad = [k for k in args.consumers if k != "none" and k not in nb.consumers()]
    if bad:
        parser.error(f"unknown consumer: {', '.join(bad)}")
    if args.pings < args.rounds or args.rounds < 1:
        parser.error("--pings must be >= --rounds >= 1")
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, iptables inside them)")
    subprocess.run(["make", "-s", "-C", str(nb.REPO / "bench")], check=True)
    nb.exit_on_sigterm()
    started, cpu_start = time.monotonic(), nb.cpu_times()
    status = run(args)
    wall = time.monotonic() - started
    print(f"note: {nb.load_note(cpu_start, wall)}")
    print(f"{wall:.0f} s; command: {' '.join(sys.argv)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
