"""The default I/O backend (queue.io = "native"): fwd._core.NfqWorkers, one C thread per queue
that receives a batch, decides it in the engine and sends the verdicts without the GIL.  Python
only starts and stops the workers and reads their counters."""

from __future__ import annotations

import asyncio
from typing import Callable, TextIO

from fwd import _core, metrics
from fwd.config import QueueConfig

# A batch is decided in microseconds: a worker this long in one is stuck (a loop, a lock) with
# its queue holding packets, and the watchdog stops.
STALL_SECONDS = 2.0


def queue_taken(numbers: tuple[int, ...]) -> str | None:
    """Why binding failed when one of our queues is bound by another process (the kernel says
    only "Operation not permitted"), or None.  We hold none of them now: the binding failed."""
    kernel = metrics.read_nfqueue()
    for num in numbers:
        if q := kernel.get(num):
            return (f"queue {num} is bound by another process (netlink port id "
                    f"{q['portid']}): is another fwd running?")
    return None


class NativeQueues:
    def __init__(self, qcfg: QueueConfig, engine: _core.Engine,
                 rule_names: Callable[[], list[str]], verdict_log: TextIO | None,
                 on_error: Callable[[BaseException], None]) -> None:
        del rule_names, on_error  # the engine's policy carries the names; workers report state
        self.qcfg = qcfg
        self.engine = engine
        self.verdict_log = verdict_log
        self.workers: _core.NfqWorkers | None = None

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        del loop  # the workers are threads of their own
        if self.verdict_log:
            self.verdict_log.flush()
        try:
            self.workers = _core.NfqWorkers(
                self.engine, list(self.qcfg.numbers), copy_range=self.qcfg.copy_range,
                max_len=self.qcfg.max_len, fail_open=self.qcfg.fail_open,
                trace_fd=self.verdict_log.fileno() if self.verdict_log else -1)
        except OSError as err:
            raise OSError(queue_taken(self.qcfg.numbers) or str(err)) from None
        self.workers.start()

    def stop_reading(self, loop: asyncio.AbstractEventLoop) -> None:
        del loop

    def close(self) -> None:
        """Stop the threads and unbind: what is still queued is the kernel's to decide, as the
        NFQUEUE rule says (bypass or drop)."""
        if self.workers:
            self.workers.stop()

    def counters(self) -> dict[int, dict[str, int]]:
        return {w["queue"]: {"packets": w["packets"], "batches": w["batches"],
                             "socket_overflows": w["enobufs"],
                             "stalled": w["busy_seconds"] > STALL_SECONDS}
                for w in (self.workers.stats() if self.workers else [])}

    def health_problem(self) -> str | None:
        """A worker that stopped, or one stuck in a batch (its heartbeat, busy_seconds)."""
        for w in self.workers.stats() if self.workers else []:
            if not w["running"] or w["error"]:
                return f"queue {w['queue']} worker stopped (errno {w['error']})"
            if w["busy_seconds"] > STALL_SECONDS:
                return (f"queue {w['queue']} worker stalled: {w['busy_seconds']:.1f} s in one "
                        f"batch, no verdict since (progress: {w['batches']} batches)")
        return None
