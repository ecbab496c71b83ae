"""Runs fwd._core.NfqWorkers inside a namespace for the native I/O tests.

    native_consumer.py JSON-ARGS

Prints {"event": "ready"} once the queues are bound and the workers run, then, when stdin
closes (or after 30 s), stops them and prints {"stats": [...], "ct": {...},
"stats_before_stop": [...], "stop_seconds": ...}.
"""

import json
import select
import sys
import time

from fwd import _core
from fwd.engine import Rule


def main() -> None:
    args = json.loads(sys.argv[1])
    engine = _core.Engine(shards=64, buckets=1024)
    engine.set_policy([Rule(**r) for r in args.get("rules", [])], args.get("default", 1),
                      -1, [f"r{i}" for i in range(len(args.get("rules", [])))])
    workers = _core.NfqWorkers(engine, args["queues"], batch=args.get("batch", 64))
    workers.start()
    print(json.dumps({"event": "ready"}), flush=True)
    select.select([sys.stdin], [], [], 30)
    before = workers.stats()
    t0 = time.monotonic()
    workers.stop()
    print(json.dumps({"stats": workers.stats(), "ct": engine.stats()["ct"],
                      "stats_before_stop": before, "stop_seconds": time.monotonic() - t0}),
          flush=True)


if __name__ == "__main__":
    main()
