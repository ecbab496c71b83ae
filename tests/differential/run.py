"""Runs sequences through the kernel (kernel.py) and through fwd's engine, packet by packet.

fwd's side is the engine the daemon runs (fwd._core), fed the same raw IP packets at the same
clock, with the policy of POLICY (the one kernel.py installs as iptables rules).  Fragments go
through fwd.defrag first, which stands for the kernel's defrag that the daemon's rules put in
front of its queue (the daemon itself never sees a fragment).  Per packet
each side's outcome is "drop" or the state the packet passed with; a disagreement where the
kernel drops and fwd accepts is a security bug, every other one is listed by cause.

With --daemon (or run(daemon=True)) the same packets also go through `fwd run` itself in a
router namespace of its own (daemon.py), compared per packet with the kernel in a second report.

    python -m tests.differential.run [--random N] [--seed S] [--no-named] [--daemon] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from fwd import _core, config
from fwd.defrag import Reassembler
from fwd.engine import configure

from .daemon import DaemonRouter
from .kernel import KernelRouter, Router
from .sequences import Sequence, named, random_sequences

POLICY = {"default": "drop", "rule": [
    {"name": "established", "ct_state": ["established", "related"], "verdict": "accept"},
    {"name": "new", "ct_state": ["new"], "verdict": "accept"},
]}
BATCH = 2000       # sequences per batch: both tables are emptied between batches
PORT0 = 20000      # first client port (and echo id) of a batch


def fwd_engine() -> _core.Engine:
    cfg = config.parse({"policy": POLICY})  # no helpers: none is in the kernel rules either
    e = _core.Engine(shards=16, buckets=4096, max_entries=1 << 20)
    configure(e, cfg)
    return e


@dataclass
class Report:
    packets: int = 0
    agree: int = 0
    sequences: int = 0
    fwd_looser: list = field(default_factory=list)  # (sequence, step, what, kernel, fwd)
    groups: Counter = field(default_factory=Counter)  # (what, kernel, fwd) -> packets
    example: dict = field(default_factory=dict)       # (what, kernel, fwd) -> "sequence #step"
    daemon: "Report | None" = None  # the same packets through `fwd run`, with --daemon

    @property
    def ratio(self) -> float:
        return self.agree / self.packets if self.packets else 1.0

    def add(self, seq: Sequence, i: int, what: str, k: str, f: str) -> None:
        self.packets += 1
        if k == f:
            self.agree += 1
            return
        key = (what, k, f)
        self.groups[key] += 1
        self.example.setdefault(key, f"{seq.name} #{i}")
        if k == "drop" and f != "drop":
            self.fwd_looser.append((seq.name, i, what, k, f))

    def text(self) -> str:
        lines = [f"{self.sequences} sequences, {self.packets} packets: "
                 f"{self.agree} agree ({100 * self.ratio:.3f} %), "
                 f"{len(self.fwd_looser)} where fwd accepts what the kernel drops"]
        if self.groups:
            lines.append("disagreements by cause (packet, kernel -> fwd: count, first example):")
            for (what, k, f), n in sorted(self.groups.items(), key=lambda kv: -kv[1]):
                lines.append(f"  {what:45} {k:>11} -> {f:<11} {n:6}  {self.example[(what, k, f)]}")
        if self.daemon:
            lines += ["through the daemon (fwd run):", self.daemon.text()]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"daemon": self.daemon.as_dict() if self.daemon else None,"sequences": self.sequences, "packets": self.packets, "agree": self.agree,
                "ratio": self.ratio, "fwd_accepts_kernel_drops": self.fwd_looser,
                "groups": [{"what": w, "kernel": k, "fwd": f, "packets": n,
                            "example": self.example[(w, k, f)]}
                           for (w, k, f), n in self.groups.most_common()]}


def outcome_fwd(result) -> str:
    verdict, _rule, state = result[:3]
    return "drop" if verdict != _core.VERDICT_ACCEPT else _core.STATE_NAMES[state]


def run_batch(kernel: KernelRouter, seqs: list[Sequence], report: Report,
              daemon: Router | None = None) -> None:
    kernel.flush()
    if daemon:
        daemon.flush()
    engine = fwd_engine()
    defrag = Reassembler()
    for seq in seqs:
        report.sequences += 1
        for i, step in enumerate(seq.steps):
            if step.sleep:
                time.sleep(step.sleep)
            now = time.monotonic()
            k = kernel.outcome(kernel.send(step.side, step.packet))
            if daemon:
                report.daemon.add(seq, i, step.what, k,
                                  daemon.outcome(daemon.send(step.side, step.packet)))
            whole = defrag.push(step.packet, now)
            # Injected frames reach the router unverified (CHECKSUM_NONE): NFQUEUE would flag
            # them CSUM_NOTVERIFIED, so fwd verifies them, as the kernel's conntrack does.
            f = "drop" if whole is None else outcome_fwd(
                engine.process([(whole, 0, 0, _core.IN_CSUM)], now)[0])
            report.add(seq, i, step.what, k, f)


def run(named_scenarios: bool = True, random_count: int = 0, seed: int = 1,
        daemon: bool = False) -> Report:
    report = Report(daemon=Report() if daemon else None)
    kernel = KernelRouter()
    fwd_router = None
    try:
        if daemon:
            fwd_router = DaemonRouter(POLICY)
        if named_scenarios:
            run_batch(kernel, named(4, PORT0) + named(6, PORT0 + 1000), report, fwd_router)
        done = 0
        while done < random_count:
            n = min(BATCH, random_count - done)
            run_batch(kernel, random_sequences(seed * 1_000_003 + done, n, PORT0, done), report,
                      fwd_router)
            done += n
    finally:
        if fwd_router:
            fwd_router.close()
        kernel.close()
    if report.daemon:
        report.daemon.sequences = report.sequences
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--random", type=int, default=10000, help="random sequences (default 10000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-named", action="store_true", help="skip the named scenarios")
    p.add_argument("--daemon", action="store_true",
                   help="also run the packets through `fwd run` in a router namespace")
    p.add_argument("--json", help="also write the report here")
    a = p.parse_args(argv)
    t0 = time.monotonic()
    report = run(not a.no_named, a.random, a.seed, a.daemon)
    print(report.text())
    print(f"({time.monotonic() - t0:.1f} s)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report.as_dict(), f, indent=1)
    bad = [r for r in (report, report.daemon) if r and (r.fwd_looser or r.ratio < 0.995)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
