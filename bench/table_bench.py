"""Conntrack table microbenchmark (issue 3): lookups/s and inserts/s per thread, 1 vs N threads,
1 vs 1024 shards with lock wait totals (the seed patch's effect, reproduced), and bytes per
tracked connection at 1M connections.

    .venv/bin/python bench/table_bench.py [--conns N] [--repeats R] [--threads 1,2] [--memory N]
    (on a many-core machine: --threads 1,2,4,8,16)

Not a test: it prints figures and ratios measured in this one run.  Every configuration runs
`repeats` times, interleaved, and the median is reported.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fwd import _core

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nfq_bench  # noqa: E402  (its machine-load note)

TARGET_LOOKUPS, TARGET_INSERTS, TARGET_BYTES = 10e6, 2e6, 192


def run_once(threads: int, shards: int, conns: int) -> dict:
    engine = _core.Engine(shards=shards, buckets=1 << 20, max_entries=1 << 22)
    r = engine.stress(threads, conns, rounds=2)
    lock = engine.stats()["locks"]["shard"]
    return {
        # *_seconds are summed over threads, so these are rates per thread.
        "lookups": r["lookups"] / r["lookup_seconds"],
        "inserts": r["inserted"] / r["insert_seconds"],
        "acquisitions": lock["acquisitions"],
        "contended": lock["contended"],
        "wait_ms": lock["wait_ns"] / 1e6,
        "hold_ms": lock["hold_ns"] / 1e6,
    }


def memory_per_connection(n: int) -> float:
    """Resident bytes added by n connections, in a fresh process (the table is sized for them)."""
    code = (
        "import gc,sys\n"
        "from fwd import _core\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
        "n=int(sys.argv[1]); e=_core.Engine(shards=1024, buckets=1<<20, max_entries=2*n)\n"
        "gc.collect(); before=rss()\n"
        "r=e.stress(1, n, rounds=1, keep=True)\n"
        "assert e.stats()['entries']==n, e.stats()['entries']\n"
        "print((rss()-before)/n)\n")
    out = subprocess.run([sys.executable, "-c", code, str(n)], check=True, capture_output=True,
                         text=True).stdout
    return float(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--conns", type=int, default=200_000, help="connections per thread per round")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--memory", type=int, default=1_000_000, help="connections for bytes/conn")
    a = p.parse_args()
    configs = [(t, s) for t in map(int, a.threads.split(",")) for s in (1, 1024)]
    runs: dict[tuple[int, int], list[dict]] = {c: [] for c in configs}
    started, cpu_start = time.monotonic(), nfq_bench.cpu_times()
    for _ in range(a.repeats):
        for c in configs:
            gc.collect()
            runs[c].append(run_once(c[0], c[1], a.conns))

    def med(c, k):
        return statistics.median(r[k] for r in runs[c])

    print(f"table microbenchmark: {a.conns} connections per thread per round, 2 rounds, "
          f"median of {a.repeats}")
    print(f"{'threads':>7} {'shards':>6} {'lookups/s/thr':>14} {'inserts/s/thr':>14} "
          f"{'acquisitions':>12} {'contended':>10} {'wait ms':>9} {'hold ms':>9}")
    for c in configs:
        print(f"{c[0]:>7} {c[1]:>6} {med(c, 'lookups') / 1e6:>13.2f}M {med(c, 'inserts') / 1e6:>13.2f}M "
              f"{med(c, 'acquisitions'):>12.0f} {med(c, 'contended'):>10.0f} {med(c, 'wait_ms'):>9.1f} "
              f"{med(c, 'hold_ms'):>9.1f}")
    one = (1, 1024)
    if one in runs:
        lk, ins = med(one, "lookups"), med(one, "inserts")
        print(f"\n1 thread, 1024 shards: lookups {lk / 1e6:.2f}M/s ({lk / TARGET_LOOKUPS:.2f}x the "
              f"10M target), inserts {ins / 1e6:.2f}M/s ({ins / TARGET_INSERTS:.2f}x the 2M target)")
    most = max(c[0] for c in configs)
    if most > 1:
        one, many = runs[(most, 1)], runs[(most, 1024)]
        ratio = [x["contended"] / max(y["contended"], 1) for x, y in zip(one, many)]
        wait = [x["wait_ms"] / max(y["wait_ms"], 1e-3) for x, y in zip(one, many)]
        thr = [y["lookups"] / x["lookups"] for x, y in zip(one, many)]
        print(f"{most} threads, 1 shard vs 1024: contended acquisitions "
              f"x{statistics.median(ratio):.1f}, lock wait x{statistics.median(wait):.1f}; "
              f"1024 shards look up x{statistics.median(thr):.2f} faster per thread (paired "
              f"medians)")
    if a.memory:
        b = memory_per_connection(a.memory)
        print(f"memory: {b:.0f} bytes per tracked connection at {a.memory} connections "
              f"(target <= {TARGET_BYTES}: {'met' if b <= TARGET_BYTES else 'missed'})")
    print(f"note: {nfq_bench.load_note(cpu_start, time.monotonic() - started)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
