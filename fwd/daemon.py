"""`fwd run`: the firewall daemon.

Packets come from NFQUEUE queue(s) queue.num .. queue.num + queue.count - 1 through one of two
backends (queue.io): "native" C worker threads, one per queue, that decide batches without the
GIL (fwd.io_native, the default), or python-netfilterqueue on the event loop (fwd.io_nfqueue).
The uvloop event loop runs the control plane: GC timer, signals, metrics, control socket.

Lifecycle, told to systemd over the notify socket (fwd.sdnotify) when there is one:
- start: bind the queues, install the rules, then READY=1.
- while running: STATUS= with a short summary every few seconds, and WATCHDOG=1 with it while
  the packet path is healthy (`_health_problem`).
- SIGHUP: RELOADING=1, re-read the file and apply it to the running engine through
  engine.configure (the path used at start): the policy swaps between two batches and tracked
  connections stay.  An invalid file, or a changed key that only a restart can apply, leaves the
  running configuration as it was, logged and reported in STATUS=.  Then READY=1.
- SIGTERM/SIGINT: STOPPING=1, release the rules as queue.on_stop says, decide what is still
  queued, unbind, exit 0 (1 if the packet path had failed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import logging
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import uvloop

from fwd import _core, checkconfig, config, control, engine, fragments, metrics, sdnotify
from fwd.rules import QueueRules, RulesError

log = logging.getLogger("fwd")

# queue.io -> the module and class of its backend, imported only when configured: the
# netfilterqueue backend needs the optional package (fwd[nfqueue]).
BACKENDS = {"native": ("fwd.io_native", "NativeQueues"),
            "netfilterqueue": ("fwd.io_nfqueue", "PyQueues")}
# Seconds between STATUS= updates (more often when the watchdog wants pings sooner).
STATUS_INTERVAL = 5.0
# The kernel's table of bound queues in fwd's network namespace, one line per queue, its number
# first.  Read through /proc/self: the unit's ProcSubset=pid hides /proc/net.
NFQUEUE_TABLE = "/proc/self/net/netfilter/nfnetlink_queue"
# What a reload may change.  Every other key is fixed at start (the engine's table size and
# timeouts, the queue and its rules): a reload that changes one is refused as a whole.
LIVE_KEYS = ("policy", "helpers", "log", "fragments", "conntrack.gc_interval",
             "conntrack.accounting")
# Overload (packets or connections lost for want of room) is logged at most once per kind in
# this many seconds, with the count since the previous line: visible without flooding the log.
OVERLOAD_INTERVAL = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=config.DEFAULT_PATH,
                        help=f"configuration file (TOML); default {config.DEFAULT_PATH}")
    parser.add_argument("--verdict-log", metavar="PATH",
                        help="write one JSON line per packet: verdict, state, rule, packet hex")


def check_live_change(old: Any, new: Any, prefix: str = "") -> None:
    """Raise ConfigError naming the first key outside LIVE_KEYS whose value differs between the
    configs (or sections) `old` and `new`."""
    for f in dataclasses.fields(old):
        key = prefix + f.name
        if key in LIVE_KEYS or key == "path":
            continue
        was, now = getattr(old, f.name), getattr(new, f.name)
        if dataclasses.is_dataclass(was):
            check_live_change(was, now, key + ".")
        elif was != now:
            show = [json.dumps(dict(v) if isinstance(v, Mapping) else v) for v in (was, now)]
            raise config.ConfigError(key, f"changed from {show[0]} to {show[1]}: needs a restart")


class Daemon:
    def __init__(self, cfg: config.Config, eng: _core.Engine, rule_names: list[str],
                 verdict_log: TextIO | None, notifier: sdnotify.Notifier) -> None:
        self.cfg = cfg
        self.engine = eng
        self.rule_names = rule_names
        self.verdict_log = verdict_log
        self.notifier = notifier
        module, name = BACKENDS[cfg.queue.io]
        backend = getattr(importlib.import_module(module), name)
        self.io = backend(cfg.queue, eng, lambda: self.rule_names, verdict_log, self._fail)
        self.stop = asyncio.Event()
        self.error: BaseException | None = None
        self.tasks: list[asyncio.Task] = []  # background tasks; one that ends is a failure
        self.last_reload = "none"  # outcome of the last reload, for STATUS=
        self.health: str | None = None  # the last health check's problem, None: healthy
        # Whether the last reload applied, and when the last that did (or the start) was.
        self.reload_success, self.reload_time = True, time.time()
        # Helper counters of the instances earlier reloads replaced, added to the live ones so
        # that the counters survive a reload: {helper name: {counter: value}}.
        self.helper_base: dict[str, dict[str, int]] = {}

    def _fail(self, err: BaseException) -> None:
        """The packet path broke: stop, exit 1."""
        self.error = err
        self.stop.set()

    @property
    def packets(self) -> int:
        return sum(c["packets"] for c in self.io.counters().values())

    async def _gc(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.conntrack.gc_interval)
            removed = self.engine.gc(time.monotonic())
            if removed:
                log.debug("gc removed %d connections", removed)

    def overload_counts(self) -> dict[str, int]:
        """The counters of loss under overload, each keyed by the words that log it."""
        stats = self.engine.stats()
        counts = {
            "new connections dropped, connection table full (conntrack.max_entries)":
                stats["ct"]["drop"],
            "unassured connections evicted from the full connection table": stats["early_drop"],
            "expectations refused, expectation table full (conntrack.expect_max)":
                stats["expect"]["refused"],
        }
        kernel = metrics.read_nfqueue(NFQUEUE_TABLE)
        for num in self.cfg.queue.numbers:
            if q := kernel.get(num):
                counts[f"packets of queue {num} dropped by the kernel, queue full "
                       f"(queue.max_len)"] = q["queue_dropped"]
                counts[f"packets of queue {num} dropped by the kernel, socket buffer full"] = \
                    q["user_dropped"]
        return counts

    async def _log_overload(self) -> None:
        """Every OVERLOAD_INTERVAL, one warning per kind of loss that grew, with the count."""
        before = self.overload_counts()
        while True:
            await asyncio.sleep(OVERLOAD_INTERVAL)
            now = self.overload_counts()
            for what, n in now.items():
                if n > before.get(what, 0):
                    log.warning("overload: %d %s in the last %g s", n - before.get(what, 0), what,
                                OVERLOAD_INTERVAL)
            before = now

    # --- observability: metrics exporter and control socket -------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What the metrics and `fwd ctl stats` show (fwd.metrics.snapshot); any thread."""
        snap = metrics.snapshot(self.engine, self.cfg.policy, self.io.counters())
        for h in snap["stats"]["helpers"]:
            for key, value in self.helper_base.get(h["name"], {}).items():
                h[key] += value
        snap["fragments"] = fragments.read()
        snap["health"] = self.health or "ok"
        snap["reload"] = {"success": self.reload_success, "timestamp": self.reload_time}
        return snap

    async def _start_observers(self, stack: contextlib.ExitStack) -> None:
        """Serve control.socket and metrics.listen as configured; closing `stack` stops them."""
        if self.cfg.control.socket:
            server = control.ControlServer(self, self.cfg.control.socket)
            await server.start()
            stack.callback(server.close)
        if address := self.cfg.metrics.address:
            try:
                exporter = metrics.Exporter(*address, self.snapshot)
            except OSError as err:
                raise OSError(f"metrics.listen {self.cfg.metrics.listen}: "
                              f"{err.strerror or err}") from None
            stack.callback(exporter.close)

    # --- reload -----------------------------------------------------------------------------
    def reload(self) -> None:
        """SIGHUP: apply the file again, all of it or nothing (see the module docstring)."""
        self.notifier.send("RELOADING=1", sdnotify.monotonic_usec())
        try:
            cfg = config.load(self.cfg.path)
            check_live_change(self.cfg, cfg)
            replaced = self.engine.stats()["helpers"]
            frag_before = fragments.apply(cfg.fragments)
            try:
                rule_names = engine.configure(self.engine, cfg)
            except config.ConfigError:
                fragments.restore(frag_before)
                raise
        except config.ConfigError as err:
            self.last_reload = f"failed, running configuration kept: {err}"
            self.reload_success = False
            log.error("reload %s", self.last_reload)
        else:
            # The replaced instances' counts carry over (what connections still attached to
            # them count from here on is not: they are being phased out).
            for h in replaced:
                base = self.helper_base.setdefault(h["name"], {})
                for key in metrics.HELPER_COUNTERS:
                    base[key] = base.get(key, 0) + h[key]
            self.reload_success, self.reload_time = True, time.time()
            self.cfg, self.rule_names = cfg, rule_names
            logging.getLogger().setLevel(cfg.log.level.upper())
            self.last_reload = f"ok at {time.strftime('%H:%M:%S')}"
            log.info("reloaded %s: %d rules", cfg.path, len(rule_names))
        self.notifier.send("READY=1", self._status())

    # --- supervision ------------------------------------------------------------------------
    def _status(self) -> str:
        return sdnotify.status(f"{self.packets} packets, {self.engine.stats()['entries']} "
                               f"connections; last reload: {self.last_reload}")

    def _health_problem(self) -> str | None:
        """Why the packet path is not healthy, or None.  That this runs at all shows the event
        loop is not stuck; beyond that: no failed batch, no background task ended, the kernel
        has every queue bound, and the backend's own check (workers alive, sockets drained)."""
        if self.error:
            return "packet path failed"
        for task in self.tasks:
            if task.done():
                return f"task {task.get_name()} ended"
        try:
            with open(NFQUEUE_TABLE) as table:
                bound = {line.split()[0] for line in table if line.strip()}
        except OSError as err:
            return f"{NFQUEUE_TABLE}: {err.strerror}"
        for num in self.cfg.queue.numbers:
            if str(num) not in bound:
                return f"queue {num} is not bound"
        return self.io.health_problem()

    async def _heartbeat(self) -> None:
        """Check health regularly (logged while unhealthy, shown by `fwd ctl stats`); to systemd
        STATUS= with it and, with a watchdog, WATCHDOG=1 while healthy (systemd kills and
        restarts fwd when the pings stop)."""
        watchdog = self.notifier.watchdog
        interval = min(STATUS_INTERVAL, watchdog / 2) if watchdog else STATUS_INTERVAL
        while True:
            await asyncio.sleep(interval)
            problem = self.health = self._health_problem()
            if problem:
                log.error("unhealthy, no watchdog ping: %s", problem)
            if watchdog and not problem:
                self.notifier.send("WATCHDOG=1", self._status())
            else:
                self.notifier.send(self._status())

    # --- lifecycle --------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        qcfg = self.cfg.queue
        rules = QueueRules(qcfg) if qcfg.install_rules else None
        self.io.open(loop)
        observers = contextlib.ExitStack()
        try:
            await self._start_observers(observers)
            if rules:
                rules.install()  # loads the kernel's defrag, whose limits come next
            fragments.apply(self.cfg.fragments)
            self.tasks.append(asyncio.create_task(self._gc(), name="gc"))
            self.tasks.append(asyncio.create_task(self._log_overload(), name="overload log"))
            self.tasks.append(asyncio.create_task(self._heartbeat(), name="heartbeat"))
            queues = f"{qcfg.num}" + (f"-{qcfg.numbers[-1]}" if qcfg.count > 1 else "")
            log.info("running: queue %s, %d shards, %d rules, io %s", queues,
                     self.cfg.conntrack.shards, len(self.rule_names), qcfg.io)
            self.notifier.send("READY=1", self._status())

            await self.stop.wait()

            self.notifier.send("STOPPING=1")
            log.info("stopping")
            for task in self.tasks:
                task.cancel()
            self.io.stop_reading(loop)
        finally:
            try:
                if rules:
                    rules.release()
            finally:
                # Decide what is still queued, then let go: from now on the kernel decides as
                # queue.on_stop says (its rule passes or drops what nobody listens for).
                self.io.close()
                observers.close()
        return 1 if self.error else 0


def _log_handler() -> logging.Handler:
    """Log lines on stderr; with priority prefixes instead of "fwd: LEVEL" when stderr is the
    journal (which adds the name and time itself)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(sdnotify.JournalFormatter("%(message)s") if sdnotify.journal_stderr()
                         else logging.Formatter("fwd: %(levelname)s %(message)s"))
    return handler


def main(args: argparse.Namespace) -> int:
    notifier = sdnotify.Notifier()
    try:
        cfg, eng, rule_names = checkconfig.build(args.config)
    except config.ConfigError as err:
        return checkconfig.report(err)
    logging.basicConfig(level=cfg.log.level.upper(), handlers=[_log_handler()])
    verdict_log = open(args.verdict_log, "a", encoding="ascii") if args.verdict_log else None
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(Daemon(cfg, eng, rule_names, verdict_log, notifier).run())
    except (OSError, RulesError) as err:
        log.error("%s", err)
        return 1
    except config.ConfigError as err:  # refused by the kernel at start (fwd.fragments)
        return checkconfig.report(err)
    finally:
        notifier.close()
        if verdict_log:
            verdict_log.close()
