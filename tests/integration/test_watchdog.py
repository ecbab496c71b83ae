"""The watchdog sees a stalled native worker: with worker 0 hung in a batch (the stall test
hook, stall_hook.py) and its queue holding the packet, fwd stops WATCHDOG=1, logs the worker,
and `fwd ctl stats` shows it; once the worker goes on, all of that comes back."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from tests.integration.conftest import QUEUE_NUM
from tests.integration.test_ctl import ctl
from tests.integration.test_service import NotifySocket, ping, wait_log

from fwd import io_native
from fwd.netns import SERVER4

STALL_HOOK = str(Path(__file__).with_name("stall_hook.py"))


def test_stalled_worker_stops_the_watchdog(start_fwd, topo, tmp_path):
    notify = NotifySocket(tmp_path / "notify")
    stalled = False
    try:
        fwd = start_fwd(env=notify.env(watchdog_usec=1_000_000),
                        wrap=(sys.executable, STALL_HOOK))
        notify.wait("WATCHDOG", "1")
        assert ping(topo, topo.client, SERVER4)
        stats = json.loads(ctl(fwd, "stats", "--json").stdout)
        assert stats["health"] == "ok"
        assert [q["stalled"] for q in stats["queues"]] == [False]

        fwd.proc.send_signal(signal.SIGUSR1)
        stalled = True
        time.sleep(0.2)
        assert not ping(topo, topo.client, SERVER4, wait=1)  # its echo request waits in queue
        wait_log(fwd, f"queue {QUEUE_NUM} worker stalled", timeout=io_native.STALL_SECONDS + 5)
        # Pings sent before the check saw the stall may still be in the socket; from the first
        # status without one on, none while the worker is stuck (heartbeats every 0.5 s).
        while "WATCHDOG" in notify.wait("STATUS", timeout=3):
            pass
        notify.messages.clear()
        for _ in range(3):
            notify.wait("STATUS", timeout=3)
        assert not [m for m in notify.messages if "WATCHDOG" in m], notify.messages
        stats = json.loads(ctl(fwd, "stats", "--json").stdout)
        assert [q["stalled"] for q in stats["queues"]] == [True]
        assert stats["health"].startswith(f"queue {QUEUE_NUM} worker stalled")
        text = ctl(fwd, "stats").stdout
        assert "worker STALLED" in text and f"health: queue {QUEUE_NUM} worker stalled" in text

        fwd.proc.send_signal(signal.SIGUSR2)  # the worker goes on: healthy again
        stalled = False
        notify.wait("WATCHDOG", "1", timeout=5)
        assert ping(topo, topo.client, SERVER4)
        assert json.loads(ctl(fwd, "stats", "--json").stdout)["health"] == "ok"
    finally:
        if stalled:  # a stuck worker cannot be joined: let it go so that fwd can stop
            fwd.proc.send_signal(signal.SIGUSR2)
        notify.sock.close()
