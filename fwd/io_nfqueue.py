"""The portable I/O backend (queue.io = "netfilterqueue"): python-netfilterqueue on the daemon's
event loop.

When a queue's netlink socket is readable, netfilterqueue's non-blocking `run()` drains every
queued packet into a batch (the per-packet callback only collects), the engine decides the whole
batch in one call, and the verdicts go back (netfilterqueue 1.1.0 accepts a verdict after its
callback has returned).  All queues share engine worker slot 0: they run on one thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import time
from typing import Callable, TextIO

from netfilterqueue import COPY_PACKET, NetfilterQueue

from fwd import _core
from fwd.config import QueueConfig

log = logging.getLogger("fwd")


class PyQueues:
    def __init__(self, qcfg: QueueConfig, engine: _core.Engine,
                 rule_names: Callable[[], list[str]], verdict_log: TextIO | None,
                 on_error: Callable[[BaseException], None]) -> None:
        self.qcfg = qcfg
        self.engine = engine
        self.rule_names = rule_names
        self.verdict_log = verdict_log
        self.on_error = on_error
        self.queues: dict[int, NetfilterQueue] = {}
        self.batch: list = []  # (packet, L3 bytes) collected by the callback
        self.packets = dict.fromkeys(self.qcfg.numbers, 0)
        self.batches = dict.fromkeys(self.qcfg.numbers, 0)
        self.drains = 0  # times a queue socket was drained: the watchdog's sign of progress
        self._pending_at: int | None = None  # self.drains when a socket was last seen readable

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        for num in self.qcfg.numbers:
            q = NetfilterQueue()
            q.bind(num, self._collect, max_len=self.qcfg.max_len, mode=COPY_PACKET,
                   range=self.qcfg.copy_range)
            self.queues[num] = q
            loop.add_reader(q.get_fd(), self._on_readable, num)

    def stop_reading(self, loop: asyncio.AbstractEventLoop) -> None:
        for q in self.queues.values():
            loop.remove_reader(q.get_fd())

    def close(self) -> None:
        """Decide what is still queued, then unbind."""
        for num, q in self.queues.items():
            self._on_readable(num)
            q.unbind()
        self.queues.clear()

    def _collect(self, pkt) -> None:
        """netfilterqueue callback: keep the packet and a copy of its bytes (valid only here)."""
        self.batch.append((pkt, pkt.get_payload()))

    def _on_readable(self, num: int) -> None:
        """Drain one queue's socket, decide the batch in one engine call, give the verdicts."""
        self.drains += 1
        try:
            self.queues[num].run(block=False)
            if self.batch:
                self._decide(num, self.batch)
        except Exception as err:  # a broken verdict path must not keep running
            log.exception("packet path failed")
            self.on_error(err)
        finally:
            self.batch = []

    def _decide(self, num: int, batch: list) -> None:
        # python-netfilterqueue leaves NFQA_CFG_F_GSO off, so the kernel fills in unfinished
        # (CHECKSUM_PARTIAL) checksums before copying: every packet that came in (the kernel's
        # conntrack checks at PRE_ROUTING, not what this host sends) can be verified.
        results = self.engine.process(
            [(data, pkt.indev, pkt.outdev, _core.IN_CSUM if pkt.indev else 0)
             for pkt, data in batch], time.monotonic())
        # strict: a missing result would leave a packet in the kernel without a verdict.
        for (pkt, _data), (verdict, mark, _state, _rule) in zip(batch, results, strict=True):
            if mark != -1:
                pkt.set_mark(mark)
            if verdict == _core.VERDICT_ACCEPT:
                pkt.accept()
            else:
                pkt.drop()
        self.packets[num] += len(batch)
        self.batches[num] += 1
        if self.verdict_log:
            self._log_verdicts(batch, results)

    def _log_verdicts(self, batch: list, results: list) -> None:
        names = self.rule_names()
        for (_pkt, data), (verdict, _mark, state, rule) in zip(batch, results):
            line = {
                "verdict": _core.VERDICT_NAMES[verdict],
                "state": _core.STATE_NAMES[state],
                "rule": names[rule] if rule >= 0 else None,
                "pkt": data.hex(),
            }
            self.verdict_log.write(json.dumps(line) + "\n")
        self.verdict_log.flush()

    def counters(self) -> dict[int, dict[str, int]]:
        return {n: {"packets": self.packets[n], "batches": self.batches[n]}
                for n in self.qcfg.numbers}

    def health_problem(self) -> str | None:
        """A socket left readable since the previous check means the loop stopped draining it
        (a readable socket is drained within one loop iteration)."""
        fds = [q.get_fd() for q in self.queues.values()]
        readable = bool(select.select(fds, [], [], 0)[0])
        stalled = self._pending_at == self.drains
        self._pending_at = self.drains if readable else None
        return "queue socket not drained since the last check" if stalled else None
