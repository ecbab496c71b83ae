"""Overload is logged, not only counted: table-full evictions, refused expectations and the
kernel's queue drops each get one warning per interval with the count since the last."""

from __future__ import annotations

import asyncio
import logging
import re
import time

from fwd import checkconfig, daemon, sdnotify
from tests.pkt import batch, udp
from tests.sipmsg import A, B, SIP_HELPER_TOML, SIP_POLICY, request, sdp

QUEUE_LINE = "    0  123  {total} 2  4016  {dropped}  {user}  0  1\n"  # /proc's nfnetlink_queue


def test_overload_is_logged_rate_limited_with_counts(tmp_path, monkeypatch, caplog):
    table = tmp_path / "nfnetlink_queue"
    monkeypatch.setattr(daemon, "NFQUEUE_TABLE", str(table))
    monkeypatch.setattr(daemon, "OVERLOAD_INTERVAL", 0.2)
    table.write_text(QUEUE_LINE.format(total=0, dropped=5, user=1))
    (tmp_path / "helpers.d").mkdir()
    (tmp_path / "helpers.d" / "sip.toml").write_text(SIP_HELPER_TOML)
    path = tmp_path / "fwd.toml"
    path.write_text(SIP_POLICY + '[queue]\nio = "netfilterqueue"\n'
                    "[conntrack]\nmax_entries = 1\nexpect_max = 1\n")
    cfg, eng, names = checkconfig.build(str(path))
    d = daemon.Daemon(cfg, eng, names, None, sdnotify.Notifier({}))

    async def run() -> None:
        task = asyncio.create_task(d._log_overload())
        await asyncio.sleep(0.05)  # the counts at start are the baseline, not logged
        # Three new SIP connections in a table of one: two do not fit; one INVITE offering
        # audio wants two expectations (RTP, RTCP) in a table of one: one refused.
        eng.process(batch(
            udp(A, B, 5060, 5060, request("INVITE", A, B, body=sdp(A, ("audio", 40000)))),
            udp(A, B, 5061, 5060, b"x" * 4), udp(A, B, 5062, 5060, b"x" * 4)), time.monotonic())
        table.write_text(QUEUE_LINE.format(total=7, dropped=105, user=1))
        await asyncio.sleep(0.3)
        lines = caplog.messages[:]
        await asyncio.sleep(0.4)  # nothing more lost: nothing more logged
        assert caplog.messages == lines
        task.cancel()

    with caplog.at_level(logging.WARNING, logger="fwd"):
        asyncio.run(run())
    expect = ("overload: 1 expectations refused, expectation table full "
              "(conntrack.expect_max) in the last 0.2 s")
    queue = ("overload: 100 packets of queue 0 dropped by the kernel, queue full "
             "(queue.max_len) in the last 0.2 s")
    # Whether a new connection evicts the unassured one or is dropped depends on the buckets
    # the (seeded) hash puts them in: two of them did not fit, one way or the other.
    table = {"new connections dropped, connection table full (conntrack.max_entries)",
             "unassured connections evicted from the full connection table"}
    lost = 0
    for line in set(caplog.messages) - {expect, queue}:
        m = re.fullmatch(r"overload: (\d+) (.*) in the last 0\.2 s", line)
        assert m and m[2] in table, line
        lost += int(m[1])
    assert {expect, queue} <= set(caplog.messages) and lost == 2
    assert len(caplog.messages) == len(set(caplog.messages))  # one line per kind
