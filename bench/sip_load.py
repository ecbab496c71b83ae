# SPDX-License-Identifier: GPL-2.0-or-later
"""SIP call load through a router namespace: fwd's SIP helper against the kernel's nf_conntrack_sip.

    .venv/bin/python bench/sip_load.py [--rates 25,50,100,200] [--seconds 10] [--quick]

A sipp caller (client namespace) calls a sipp callee (server namespace) through the fw
namespace, which routes with a default-drop stateful policy: FORWARD drops, except established
and related packets and new UDP to port 5060.  Each call has its own signalling flow (`sipp -t
un`) and its own media ports ([auto_media_port]); after the ACK both sides play 1.8 s of RTP
(cut from the g711a.pcap that Debian's sip-tester installs in /usr/share/sip-tester), the caller
hangs up after 2 s.  RTP passes only through the expectations the helper opened from the SDP.
sipp runs at nice 10 so that the router wins the CPU.

Routers, measured one after the other at each rate (same run, same box):
  kernel  iptables in the fw namespace: raw PREROUTING `-p udp --dport 5060 -j CT --helper sip`,
          FORWARD policy DROP, ESTABLISHED,RELATED accept, NEW udp dport 5060 accept
  fwd     FORWARD -j NFQUEUE to fwd (native, 1 queue, fail-open off) with the same policy and
          the SIP helper of etc/helpers.d/sip.toml; started afresh for every rate
  nfq     the same queue rule to the C accept-all consumer (bench/nfq_accept.c, batch
          verdicts): no tracking, no policy, no helper, so the price of the NFQUEUE round trip
          itself, the floor under any NFQUEUE firewall
  plain   forwarding only (no rules, no conntrack): the floor under every router

Per rate and router: calls ok / failed (sipp's own statistics), RTP packets sent and lost per
direction (iptables counters in both endpoint namespaces), expectations at peak (sampled each
second: /proc/net/nf_conntrack_expect of the fw namespace, or fwd's fwd_expect_entries) and
left 3 s after the last call, queue drops (the kernel's counters of fwd's queue), fwd's CPU
seconds (per call) and RSS, how busy the whole machine was.  Everything runs in namespaces made
here and is removed at exit, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nfq_bench as nb  # noqa: E402 (puts the repository on sys.path)
import newconn_bench as ncb  # noqa: E402
from nfq_bench import QUEUE, BenchError, Consumer, Lab  # noqa: E402

from fwd import gateway  # noqa: E402

REPO = nb.REPO
SIPP_DATA = Path("/usr/share/sip-tester")   # Debian's sip-tester: g711a.pcap and friends
MEDIA_SECONDS = 1.8
CALL_SECONDS = 2.0
LINGER = 3.0           # seconds after the last call before "left after" is read
NICE = "10"

FWD_POLICY = gateway.policy("stateful", "sip-udp")  # established/related, new UDP to 5060


def fwd_text(expect_max: int | None = None) -> str:
    """nfq_bench's fwd config (native, 1 queue, fail-open off) with the exporter on, the SIP
    helper of etc/helpers.d and the SIP policy; conntrack.expect_max if given."""
    return (f'[helpers]\ndir = "{REPO / "etc" / "helpers.d"}"\n\n'
            + (f"[conntrack]\nexpect_max = {expect_max}\n\n" if expect_max else "")
            + nb.fwd_config_text(QUEUE, "native", 1, listen=f"127.0.0.1:{ncb.METRICS_PORT}",
                                 policy=FWD_POLICY))


def media_pcap(out: Path, seconds: float = MEDIA_SECONDS) -> int:
    """The first `seconds` of sipp's g711a.pcap (classic pcap) into out; its packet count."""
    data = (SIPP_DATA / "g711a.pcap").read_bytes()
    magic = data[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">"}.get(magic)
    if endian is None:
        raise BenchError(f"{SIPP_DATA / 'g711a.pcap'}: not a classic pcap file")
    pos, first, keep, n = 24, None, [data[:24]], 0
    while pos + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack(endian + "IIII", data[pos:pos + 16])
        t = sec + usec / 1e6
        first = t if first is None else first
        if t - first >= seconds:
            break
        keep.append(data[pos:pos + 16 + incl])
        pos += 16 + incl
        n += 1
    out.write_bytes(b"".join(keep))
    return n


class SipLab:
    def __init__(self, lab: Lab, args) -> None:
        self.lab, self.args, self.t = lab, args, lab.topo
        self.scratch = lab.scratch
        self.media_packets = media_pcap(self.scratch / "media.pcap")
        for name in ("uac.xml", "uas.xml"):
            (self.scratch / name).write_text((REPO / "bench" / "sip" / name).read_text())
        # Endpoints count RTP (every UDP packet not to or from 5060): sent in OUTPUT, received
        # in raw PREROUTING, where it is also dropped.  sipp plays media from raw sockets and
        # listens on no media port, so delivering RTP would only cost the endpoint an ICMP port
        # unreachable and a walk over sipp's raw sockets per packet, in the softirq of whoever
        # forwarded it (the router: fwd's verdict, or the kernel's forwarding).
        rtp = ["-p", "udp", "-m", "multiport", "!", "--ports", "5060"]
        for ns in (self.t.client, self.t.server):
            self.t.run(ns, ["iptables", "-w", "-A", "OUTPUT", *rtp, "-j", "ACCEPT"])
            self.t.run(ns, ["iptables", "-w", "-t", "raw", "-A", "PREROUTING", *rtp,
                            "-j", "DROP"])

    def rtp_counts(self) -> dict[str, int]:
        out = {}
        for side, ns in (("caller", self.t.client), ("callee", self.t.server)):
            for table, chain in (("raw", "PREROUTING"), ("filter", "OUTPUT")):
                rows = self.t.run(ns, ["iptables", "-w", "-t", table, "-nvxL", chain]
                                  ).stdout.splitlines()
                out[f"{side}_{'input' if chain == 'PREROUTING' else 'output'}"] = int(
                    rows[2].split()[0])
        return out

    def zero_counts(self) -> None:
        for ns in (self.t.client, self.t.server):
            for table in ("raw", "filter"):
                self.t.run(ns, ["iptables", "-w", "-t", table, "-Z"])

    # routers
    def kernel_rules(self, on: bool) -> None:
        fw = self.t.fw
        for table in ("filter", "raw"):
            self.t.run(fw, ["iptables", "-w", "-t", table, "-F"])
        self.t.run(fw, ["iptables", "-w", "-P", "FORWARD", "DROP" if on else "ACCEPT"])
        if on:
            for rule in (["-t", "raw", "-A", "PREROUTING", "-p", "udp", "--dport", "5060",
                          "-j", "CT", "--helper", "sip"],
                         ["-A", "FORWARD", "-m", "conntrack", "--ctstate",
                          "ESTABLISHED,RELATED", "-j", "ACCEPT"],
                         ["-A", "FORWARD", "-p", "udp", "--dport", "5060", "-m", "conntrack",
                          "--ctstate", "NEW", "-j", "ACCEPT"]):
                self.t.run(fw, ["iptables", "-w", *rule])
        self.t.run(fw, ["conntrack", "-F"], check=False)

    def kernel_expectations(self) -> int:
        with open(f"/proc/{self.lab.anchor.pid}/net/nf_conntrack_expect") as f:
            return sum(1 for line in f if line.strip())

    # sipp
    def sipp(self, ns: str, argv: list[str]):
        # -max_socket: sipp refuses to start when its default (50000) exceeds the file limit.
        proc = self.t.popen(ns, ["nice", "-n", NICE, "sipp", *argv, "-max_socket", "10000"],
                            cwd=self.scratch,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lab.procs.append(proc)
        return proc

    def step(self, router: str, rate: int) -> dict:
        secs, calls = self.args.seconds, int(rate * self.args.seconds)
        stat = self.scratch / f"uac-{router}-{rate}.csv"
        fwd = None  # the queue's consumer: fwd or the accept-all one
        if router in ("fwd", "nfq"):
            self.kernel_rules(False)
            self.lab.set_rule(1)
            path = self.scratch / "fwd-sip.toml"
            path.write_text(fwd_text(self.args.expect_max))
            argv = ([nb.PY, "-m", "fwd", "run", "--config", str(path)] if router == "fwd"
                    else [str(nb.TOOLS / "nfq_accept"), str(QUEUE)])
            fwd = self.lab.start_consumer(Consumer(
                router, router, 1, nb.FULL_QUEUE, lambda q, _: argv))
            time.sleep(0.5)
        else:
            self.lab.set_rule(None)
            self.kernel_rules(router == "kernel")
        perf = None
        if router == "fwd" and rate == self.args.perf:
            perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-g", "-p",
                                     str(fwd.pid), "-o", str(nb.TOOLS / "perf-sip.data")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            events = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{n}" for n in SYSCALLS]
            pstat = subprocess.Popen(["perf", "stat", "-x", ",", "-o",
                                      str(self.scratch / "perf-stat.txt"), "-p", str(fwd.pid),
                                      *[a for e in events for a in ("-e", e)]],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            self.lab.procs += [perf, pstat]
            time.sleep(0.5)
            verdicts0 = verdicts(ncb.scrape(self.lab))
        try:
            row = self._calls(router, rate, secs, calls, stat, fwd)
            if perf:
                row["packets"] = verdicts(ncb.scrape(self.lab)) - verdicts0
                for p in (perf, pstat):
                    p.send_signal(signal.SIGINT)
                    p.communicate(timeout=60)
                row["syscalls"] = {}
                for line in (self.scratch / "perf-stat.txt").read_text().splitlines():
                    f = line.split(",")
                    if len(f) > 2 and f[0].strip().isdigit():
                        row["syscalls"][f[2].split("sys_enter_")[-1].split(":")[-1]] = int(f[0])
                self.perf_report(row)
            return row
        finally:
            if fwd:
                try:
                    self.lab.stop_consumer(fwd, Consumer(router, "", 1, 0, lambda *_: []))
                except BenchError as err:
                    print(f"note: fwd stop: {err}", file=sys.stderr)
            self.lab.end_strays()
            self.kernel_rules(False)
            self.lab.set_rule(None)

    def perf_report(self, row: dict) -> None:
        """Flat profiles (by DSO, by symbol) of the fwd step just recorded, to build/bench/."""
        def flat(sort: str, children: str = "--no-children") -> str:
            return subprocess.run(["perf", "report", "-i", str(nb.TOOLS / "perf-sip.data"),
                                   "--stdio", children, "--sort", sort, "-g", "none",
                                   "--percent-limit", "0.3" if children != "--children" else "3"],
                                  capture_output=True, text=True, timeout=300).stdout
        out = nb.TOOLS / "perf-sip.txt"
        per = {k: v / max(row["packets"], 1) for k, v in row["syscalls"].items()}
        out.write_text(f"# perf record -e cpu-clock -g of fwd at {row['rate']} calls/s "
                       f"({row['ok']} calls ok, fwd CPU {row.get('fwd_cpu', 0):.2f} s)\n"
                       f"# {row['packets']} packets got a verdict; syscalls per packet: "
                       + ", ".join(f"{k} {v:.3f}" for k, v in per.items()) + "\n"
                       f"# command: {' '.join(sys.argv)}\n"
                       f"{flat('comm')}\n{flat('dso')}\n{flat('symbol', '--children')}\n"
                       f"{flat('dso,symbol')}")
        print(f"note: perf profile in {out.relative_to(REPO)}", flush=True)

    def _expectations(self, router: str) -> int:
        if router == "fwd":
            return int(ncb.scrape(self.lab).get("fwd_expect_entries", 0))
        return self.kernel_expectations()  # the kernel's (none without its rules)

    def _calls(self, router, rate, secs, calls, stat, fwd) -> dict:
        uas = self.sipp(self.t.server, ["-sf", "uas.xml", "-i", nb.SERVER4, "-p", "5060",
                                        "-mi", nb.SERVER4, "-mp", "20000", "-nostdin"])
        time.sleep(0.5)
        if uas.poll() is not None:
            raise BenchError(f"sipp callee exited {uas.returncode}: {uas.stderr.read()[-500:]}")
        self.zero_counts()
        q0 = self.lab.queue_stats().get(QUEUE)
        cpu0 = ncb.runtime(fwd.pid, softirqd=False) if fwd else 0.0
        uas0, softd0 = ncb.runtime(uas.pid, softirqd=False), ncb.runtime(None)
        box0, soft0, t0 = nb.cpu_times(), softirq_seconds(), time.monotonic()
        uac = self.sipp(self.t.client, [
            f"{nb.SERVER4}:5060", "-sf", "uac.xml", "-i", nb.CLIENT4, "-t", "un",
            "-mi", nb.CLIENT4, "-mp", "30000", "-r", str(rate), "-m", str(calls),
            "-timeout", f"{int(secs + 30)}s", "-trace_stat", "-stf", str(stat), "-fd", "1",
            "-nostdin"])
        peak = 0
        while (uac_cpu := reap(uac)) is None:
            peak = max(peak, self._expectations(router))
            time.sleep(1 if router == "fwd" else 0.2)  # a scrape costs fwd a table walk
            if time.monotonic() - t0 > secs + 60:
                raise BenchError("sipp caller did not finish")
        wall = time.monotonic() - t0
        box, soft = nb.cpu_times(), softirq_seconds() - soft0
        fwd_cpu = ncb.runtime(fwd.pid, softirqd=False) - cpu0 if fwd else 0.0
        total = (uac_cpu + ncb.runtime(uas.pid, softirqd=False) - uas0 + ncb.runtime(None)
                 - softd0 + fwd_cpu)
        time.sleep(LINGER)
        left = self._expectations(router)
        q1 = self.lab.queue_stats().get(QUEUE)
        rtp = self.rtp_counts()
        calls_done = sipp_calls(stat)
        ok, failed = calls_done["ok"], calls_done["failed"]
        if not ok and not failed:
            raise BenchError(f"sipp caller exited {uac.returncode}, no statistics: "
                             f"{uac.stderr.read()[-800:]}")
        out = {"router": router, "rate": rate, "calls": calls, "ok": ok, "failed": failed,
               "rtp_sent_caller": rtp["caller_output"], "rtp_sent_callee": rtp["callee_output"],
               "rtp_lost_to_callee": rtp["caller_output"] - rtp["callee_input"],
               "rtp_lost_to_caller": rtp["callee_output"] - rtp["caller_input"],
               "sipp_retrans": calls_done["retrans"],
               "sipp_failures": {k: v for k, v in calls_done.items()
                                 if k not in ("ok", "failed", "retrans")},
               "expect_peak": peak, "expect_left": left, "wall": wall,
               "box_busy_cpus": (box[0] - box0[0]) / wall, "softirq_cpu": soft,
               "total_cpu": total,
               "sipp_exit": uac.returncode}
        if fwd:
            out["qdrop"] = (q1.dropped - q0.dropped) + (q1.user_dropped - q0.user_dropped)
            out["fwd_cpu"] = fwd_cpu
            with open(f"/proc/{fwd.pid}/status") as f:
                st = dict(line.split(":", 1) for line in f)
            out["fwd_rss_mib"] = int(st["VmRSS"].split()[0]) / 1024
            out["fwd_hwm_mib"] = int(st["VmHWM"].split()[0]) / 1024
        if router == "fwd":
            m = ncb.scrape(self.lab)
            out["expect_refused"] = m.get("fwd_expect_refused_total", 0)
            out["expect_created"] = m.get("fwd_expect_created_total", 0)
            out["expect_flushed"] = m.get("fwd_expect_flushed_total", 0)
        return out


SYSCALLS = ("poll", "ppoll", "epoll_wait", "recvmmsg", "recvmsg", "sendmsg", "sendmmsg", "read",
            "write", "futex", "clock_gettime")


def reap(proc) -> float | None:
    """None while proc runs; once it has ended, its CPU seconds (user + system of the reaped
    child: the kernel scales them to its precise runtime)."""
    pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
    if not pid:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime


def verdicts(metrics: dict) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("fwd_verdicts_total"))


def softirq_seconds() -> float:
    """Softirq CPU seconds of the whole machine so far (/proc/stat, sampled at the tick): where
    the kernel router's work is accounted (in whatever task's context it ran)."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[7]) / os.sysconf("SC_CLK_TCK")


def sipp_calls(stat: Path) -> dict[str, int]:
    """From the last line of sipp's -trace_stat file: calls "ok" and "failed", "retrans"
    (messages sipp retransmitted: the sign of a message lost or late) and every nonzero
    failure reason by sipp's name (e.g. FailedMaxUDPRetrans)."""
    try:
        rows = [r.split(";") for r in stat.read_text().splitlines() if r.strip()]
    except OSError:
        return {"ok": 0, "failed": 0, "retrans": 0}
    last = dict(zip(rows[0], rows[-1]))
    out = {"ok": int(last["SuccessfulCall(C)"]), "failed": int(last["FailedCall(C)"]),
           "retrans": int(last.get("Retransmissions(C)", 0))}
    for key, value in last.items():
        if key.startswith("Failed") and key.endswith("(C)") and key != "FailedCall(C)":
            if value.strip().isdigit() and int(value):
                out[key[:-3]] = int(value)
    return out


def report(rows: list[dict], args) -> str:
    def per_call(r, key):
        return r[key] / max(r["ok"], 1) * 1e3

    out = [f"{'router':7} {'calls/s':>7} {'ok':>6} {'failed':>6} {'RTP sent c>s/s>c':>17} "
           f"{'lost c>s':>8} {'lost s>c':>8} {'exp peak':>8} {'left':>5} {'qdrop':>6} "
           f"{'fwd ms/call':>11} {'RSS MiB':>7} {'softirq ms/call':>15} {'all ms/call':>11} "
           f"{'box CPUs':>8}"]
    for r in rows:
        fwd = r["router"] in ("fwd", "nfq")
        out.append(
            f"{r['router']:7} {r['rate']:7} {r['ok']:6} {r['failed']:6} "
            f"{r['rtp_sent_caller']:>8}/{r['rtp_sent_callee']:<8} {r['rtp_lost_to_callee']:8} "
            f"{r['rtp_lost_to_caller']:8} {r['expect_peak']:8} {r['expect_left']:5} "
            + (f"{r['qdrop']:6} {per_call(r, 'fwd_cpu'):11.2f} {r['fwd_rss_mib']:7.1f} "
               if fwd else f"{'-':>6} {'-':>11} {'-':>7} ")
            + f"{per_call(r, 'softirq_cpu'):15.2f} {per_call(r, 'total_cpu'):11.2f} "
              f"{r['box_busy_cpus']:8.2f}")
    out.append("")
    out.append("router CPU per call over plain forwarding (all ms/call minus plain's at the "
               "same rate):")
    by = {(r["router"], r["rate"]): r for r in rows}
    for rate in sorted({r["rate"] for r in rows}):
        plain, k, f, a = (by.get((x, rate)) for x in ("plain", "kernel", "fwd", "nfq"))
        if not (plain and k and f):
            continue
        dk = per_call(k, "total_cpu") - per_call(plain, "total_cpu")
        df = per_call(f, "total_cpu") - per_call(plain, "total_cpu")
        da = per_call(a, "total_cpu") - per_call(plain, "total_cpu") if a else None
        out.append(f"  {rate:4} calls/s: kernel +{dk:.2f} ms, fwd +{df:.2f} ms"
                   + (f" ({df / dk:.1f}x the kernel's)" if dk > 0 else "")
                   + f"; fwd - kernel {df - dk:+.2f} ms per call"
                   + (f"; NFQUEUE accept-all +{da:.2f} ms, fwd - accept-all {df - da:+.2f} ms"
                      if da is not None else ""))
    ratios = []
    for rate in sorted({r["rate"] for r in rows}):
        k = by.get(("kernel", rate))
        if k:
            for x in ("fwd", "nfq"):
                if (x, rate) in by:
                    ratio = per_call(by[x, rate], "total_cpu") / per_call(k, "total_cpu")
                    ratios.append(f"{x} at {rate} {ratio:.2f}")
    out.append("all ms/call over the kernel router's (target: fwd <= 1.2): " + ", ".join(ratios))
    out.append("fwd ms/call: the queue consumer's threads, fwd's or accept-all's (with the "
               "forwarding and delivery its verdicts run "
               "in softirq).  softirq: the machine's softirq time, tick-sampled (where the "
               "kernel router's work is accounted; fwd's verdict softirq is in both columns).  "
               "all: sipp caller + callee + ksoftirqd + fwd, scheduler-precise: the same "
               "calls and RTP on every router, so differences at one rate are the router's.  "
               "box CPUs: busy CPUs, other work included.")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--rates", default="25,50,100,200", help="calls per second, stepped")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of calls per step")
    parser.add_argument("--routers", default="plain,nfq,kernel,fwd",
                        help="of plain, nfq, kernel, fwd (see above)")
    parser.add_argument("--quick", action="store_true", help="rates 10,40 for 4 s each")
    parser.add_argument("--expect-max", type=int, metavar="N",
                        help="fwd's conntrack.expect_max (default 4096, as the kernel's here, "
                             "which a network namespace cannot change)")
    parser.add_argument("--perf", type=int, metavar="RATE",
                        help="profile fwd with perf at this rate (build/bench/perf-sip.txt)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    if args.quick:
        args.rates, args.seconds = "10,40", 4.0
    rates = [int(r) for r in args.rates.split(",")]
    routers = args.routers.split(",")
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, iptables inside them)")
    if not (SIPP_DATA / "g711a.pcap").exists():
        parser.error(f"{SIPP_DATA / 'g711a.pcap'} missing (apt-get install sip-tester)")
    nb.exit_on_sigterm()
    started, cpu_start = time.monotonic(), nb.cpu_times()
    rows = []
    lab = Lab("sipb")
    try:
        sl = SipLab(lab, args)
        for rate in rates:
            for router in routers:
                try:
                    row = sl.step(router, rate)
                except BenchError as err:
                    print(f"note: {router} at {rate} calls/s: {err}", flush=True)
                    continue
                rows.append(row)
                print(f"  {router:6} {rate:4} calls/s: ok {row['ok']} failed {row['failed']} "
                      f"RTP lost {row['rtp_lost_to_callee']}/{row['rtp_lost_to_caller']} "
                      f"expectations peak {row['expect_peak']} left {row['expect_left']} "
                      f"sipp retransmissions {row['sipp_retrans']}"
                      + "".join(f" {k} {v}" for k, v in row["sipp_failures"].items())
                      + (f" expectations created {row['expect_created']:.0f} refused "
                         f"{row['expect_refused']:.0f} flushed {row['expect_flushed']:.0f}"
                         if "expect_created" in row else ""),
                      flush=True)
    finally:
        lab.close()
    wall = time.monotonic() - started
    print()
    print(f"{sl.media_packets} RTP packets per call and direction ({MEDIA_SECONDS} s of "
          f"g711a.pcap), calls of {CALL_SECONDS} s, {args.seconds:g} s of calls per step")
    print(report(rows, args))
    print(f"note: {nb.load_note(cpu_start, wall)}")
    print(f"{wall:.0f} s; command: {' '.join(sys.argv)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
