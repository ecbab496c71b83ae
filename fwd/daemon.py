"""`fwd run`: the firewall daemon on one NFQUEUE queue.

A uvloop event loop watches the queue's netlink socket.  When it is readable, netfilterqueue's
non-blocking `run()` drains every queued packet into a batch (the per-packet callback only
collects), the engine decides the whole batch in one call, and the verdicts go back to the kernel
(netfilterqueue 1.1.0 accepts a verdict after its callback has returned).  A timer runs the
conntrack GC.  SIGTERM/SIGINT: stop reading, remove the installed rules, give verdicts to what is
still queued, unbind, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from typing import TextIO

import uvloop
from netfilterqueue import COPY_PACKET, NetfilterQueue

from fwd import _core, config, engine
from fwd.rules import QueueRules, RulesError

log = logging.getLogger("fwd")

# Packets the kernel may hold for us.  netfilterqueue sizes its socket buffer for 1024 packets of
# the full copy range; a longer queue could overflow the socket and strand packets unverdicted.
QUEUE_MAX_LEN = 1024
# Bytes copied per packet: netfilterqueue's maximum; helpers need payloads, not only headers.
COPY_RANGE = 4016


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="configuration file (TOML)")
    parser.add_argument("--verdict-log", metavar="PATH",
                        help="write one JSON line per packet: verdict, state, rule, packet hex")


class Daemon:
    def __init__(self, cfg: config.Config, eng: _core.Engine, rule_names: list[str],
                 verdict_log: TextIO | None) -> None:
        self.cfg = cfg
        self.engine = eng
        self.rule_names = rule_names
        self.verdict_log = verdict_log
        self.queue = NetfilterQueue()
        self.batch: list = []  # (packet, L3 bytes) collected by the callback
        self.stop = asyncio.Event()
        self.error: BaseException | None = None

    def _collect(self, pkt) -> None:
        """netfilterqueue callback: keep the packet and a copy of its bytes (valid only here)."""
        self.batch.append((pkt, pkt.get_payload()))

    def _on_readable(self) -> None:
        """Drain the queue socket, decide the batch in one engine call, give the verdicts."""
        try:
            self.queue.run(block=False)
            if self.batch:
                self._decide(self.batch)
        except Exception as err:  # a broken verdict path must not keep running: stop, exit 1
            log.exception("packet path failed")
            self.error = err
            self.stop.set()
        finally:
            self.batch = []

    def _decide(self, batch: list) -> None:
        results = self.engine.process(
            [(data, pkt.indev, pkt.outdev) for pkt, data in batch], time.monotonic())
        # strict: a missing result would leave a packet in the kernel without a verdict.
        for (pkt, _data), (verdict, mark, _state, _rule) in zip(batch, results, strict=True):
            if mark != -1:
                pkt.set_mark(mark)
            if verdict == _core.VERDICT_ACCEPT:
                pkt.accept()
            else:
                pkt.drop()
        if self.verdict_log:
            self._log_verdicts(batch, results)

    def _log_verdicts(self, batch: list, results: list) -> None:
        for (_pkt, data), (verdict, _mark, state, rule) in zip(batch, results):
            line = {
                "verdict": "accept" if verdict == _core.VERDICT_ACCEPT else "drop",
                "state": _core.STATE_NAMES[state],
                "rule": self.rule_names[rule] if rule >= 0 else None,
                "pkt": data.hex(),
            }
            self.verdict_log.write(json.dumps(line) + "\n")
        self.verdict_log.flush()

    async def _gc(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.conntrack.gc_interval)
            removed = self.engine.gc(time.monotonic())
            if removed:
                log.debug("gc removed %d connections", removed)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        qcfg = self.cfg.queue
        rules = QueueRules(qcfg) if qcfg.install_rules else None
        self.queue.bind(qcfg.num, self._collect, max_len=QUEUE_MAX_LEN, mode=COPY_PACKET,
                        range=COPY_RANGE)
        fd = self.queue.get_fd()
        try:
            if rules:
                rules.install()
            loop.add_reader(fd, self._on_readable)
            gc = asyncio.create_task(self._gc())
            log.info("running: queue %d, %d shards, %d rules", qcfg.num,
                     self.cfg.conntrack.shards, len(self.rule_names))
            await self.stop.wait()
            log.info("stopping")
            gc.cancel()
            loop.remove_reader(fd)
        finally:
            try:
                if rules:
                    rules.remove()
            finally:
                # Nothing new reaches the queue now; decide what is still in it, then let go.
                self._on_readable()
                self.queue.unbind()
        return 1 if self.error else 0


def main(args: argparse.Namespace) -> int:
    try:
        cfg = config.load(args.config)
        eng = engine.create_engine(cfg)
        rule_names = engine.configure(eng, cfg)
    except config.ConfigError as err:
        print(f"fwd: config error: {err}", file=sys.stderr)
        return config.EXIT_CONFIG
    logging.basicConfig(stream=sys.stderr, level=cfg.log.level.upper(),
                        format="fwd: %(levelname)s %(message)s")
    verdict_log = open(args.verdict_log, "a", encoding="ascii") if args.verdict_log else None
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(Daemon(cfg, eng, rule_names, verdict_log).run())
    except (OSError, RulesError) as err:
        log.error("%s", err)
        return 1
    finally:
        if verdict_log:
            verdict_log.close()
