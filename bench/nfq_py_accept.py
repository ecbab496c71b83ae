# SPDX-License-Identifier: GPL-2.0-or-later
"""Accept-only NFQUEUE consumer on python netfilterqueue: consumer (b) of bench/nfq_bench.py.

    nfq_py_accept.py QUEUE [--max-len N] [--copy-range N] [--sock-len BYTES]

The plainest netfilterqueue loop: a blocking run() and one Python callback per packet that
only accepts.  SIGTERM/SIGINT: print {"packets": N} on stdout, exit 0.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from netfilterqueue import COPY_PACKET, NetfilterQueue


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queue", type=int)
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--copy-range", type=int, default=4016)
    parser.add_argument("--sock-len", type=int, help="socket receive buffer (bytes)")
    args = parser.parse_args()

    packets = 0

    def accept(pkt) -> None:
        nonlocal packets
        pkt.accept()
        packets += 1

    def stop(_sig, _frame) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    q = NetfilterQueue()
    extra = {"sock_len": args.sock_len} if args.sock_len else {}
    q.bind(args.queue, accept, max_len=args.max_len, mode=COPY_PACKET, range=args.copy_range,
           **extra)
    try:
        q.run()
    except SystemExit:
        pass
    finally:
        q.unbind()
        print(json.dumps({"packets": packets}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
